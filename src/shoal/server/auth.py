"""Who may do what: tokens with a scope, limited to database name patterns.

A token is a random secret shown once when it is made; the node keeps only its
SHA-256. (A slow password hash buys nothing for 192 random bits, and a fast one
keeps the check off the request's critical path.) Tokens live in the data
directory's `node.db`, so `shoal token create` works while the node runs: the
node re-reads the table when SQLite says it changed, checked once a second off
the event loop, so a revocation takes effect within about a second.

Scopes are ordered: `read` < `write` < `admin`. `write` runs statements that
change data; `admin` also creates, drops, loads and backs up whole databases.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import functools
import hashlib
import ipaddress
import secrets
import time
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import cast

import apsw

from shoal.errors import Forbidden, InvalidRequest, Unauthorized
from shoal.server.config import TokenSpec

__all__ = [
    "Grant",
    "Scope",
    "TokenInfo",
    "TokenStore",
    "credentials",
    "hash_secret",
    "is_loopback",
]

TOKEN_PREFIX = "shoal_"


class Scope(IntEnum):
    READ = 1
    WRITE = 2
    ADMIN = 3

    @classmethod
    def parse(cls, text: str) -> Scope:
        try:
            return cls[text.upper()]
        except KeyError:
            raise InvalidRequest(f"scope {text!r} is not one of read, write, admin") from None


@dataclass(frozen=True)
class Grant:
    """What one token allows."""

    name: str
    scope: Scope
    databases: tuple[str, ...]

    def covers(self, database: str) -> bool:
        return any(fnmatch.fnmatchcase(database, pattern) for pattern in self.databases)

    def check(self, scope: Scope, database: str | None) -> None:
        """Raises Forbidden unless this grant allows `scope` on `database` (None: any)."""
        if self.scope < scope:
            raise Forbidden(
                f"token {self.name!r} has scope {self.scope.name.lower()}; "
                f"this needs {scope.name.lower()}"
            )
        if database is not None and not self.covers(database):
            raise Forbidden(f"token {self.name!r} does not cover database {database!r}")


ANYONE_ON_LOOPBACK = Grant("loopback (no tokens configured)", Scope.ADMIN, ("*",))


@dataclass(frozen=True)
class TokenInfo:
    name: str
    scope: str
    databases: tuple[str, ...]
    created: float


def hash_secret(secret: str) -> str:
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()


def _grant(name: str, scope: str, databases: tuple[str, ...]) -> Grant:
    return Grant(name, Scope.parse(scope), databases)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens(
    name TEXT PRIMARY KEY,
    hash TEXT NOT NULL UNIQUE,
    scope TEXT NOT NULL,
    databases TEXT NOT NULL,  -- patterns, one per line
    created REAL NOT NULL
)
"""


class TokenStore:
    """The tokens of one data directory, in its `node.db`."""

    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self._conn = apsw.Connection(str(data_dir / "node.db"))
        self._conn.set_busy_timeout(5000)
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute(_SCHEMA)

    def create(self, name: str, scope: str, databases: tuple[str, ...]) -> str:
        """Makes a token; returns its secret, which is not kept anywhere."""
        Scope.parse(scope)
        if not name or not databases:
            raise InvalidRequest("a token needs a name and at least one database pattern")
        secret = TOKEN_PREFIX + secrets.token_urlsafe(24)
        try:
            self._conn.execute(
                "INSERT INTO tokens VALUES (?, ?, ?, ?, ?)",
                (name, hash_secret(secret), scope.lower(), "\n".join(databases), time.time()),
            )
        except apsw.ConstraintError:
            raise InvalidRequest(f"a token named {name!r} exists already") from None
        return secret

    def list(self) -> list[TokenInfo]:
        return [
            TokenInfo(name, scope, tuple(databases.split("\n")), created)
            for name, scope, databases, created in self._conn.execute(
                "SELECT name, scope, databases, created FROM tokens ORDER BY name"
            )
        ]

    def revoke(self, name: str) -> None:
        self._conn.execute("DELETE FROM tokens WHERE name = ?", (name,))
        if self._conn.changes() == 0:
            raise InvalidRequest(f"no token named {name!r}")

    def grants(self) -> dict[str, Grant]:
        """Every stored token's grant, by hash."""
        return {
            hash_: _grant(name, scope, tuple(databases.split("\n")))
            for name, hash_, scope, databases in self._conn.execute(
                "SELECT name, hash, scope, databases FROM tokens"
            )
        }

    def data_version(self) -> int:
        """Changes when another connection (`shoal token ...`) writes the file."""
        return cast(int, self._conn.execute("PRAGMA data_version").fetchall()[0][0])

    def close(self) -> None:
        self._conn.close()


class Authenticator:
    """Turns a request's credentials into a Grant, from an in-memory copy of the tokens."""

    def __init__(
        self, store: TokenStore, configured: tuple[TokenSpec, ...], admin_token: str | None
    ) -> None:
        self._store = store
        self._fixed = {
            spec.hash: _grant(spec.name, spec.scope, spec.databases) for spec in configured
        }
        if admin_token:
            self._fixed[hash_secret(admin_token)] = Grant("admin-token", Scope.ADMIN, ("*",))
        self._seen_version = -1
        self._grants: dict[str, Grant] = dict(self._fixed)
        self.refresh()

    @property
    def open(self) -> bool:
        """True when no token exists: then only loopback clients are served."""
        return not self._grants

    def refresh(self) -> None:
        """Re-reads stored tokens if the file changed (blocking: run it off the loop)."""
        version = self._store.data_version()
        if version != self._seen_version:
            self._grants = {**self._store.grants(), **self._fixed}
            self._seen_version = version

    def authenticate(self, authorization: str | None, client_host: str | None) -> Grant:
        """The grant for a request, or Unauthorized."""
        if self.open:
            if is_loopback(client_host):
                return ANYONE_ON_LOOPBACK
            raise Unauthorized(
                "this node has no tokens and serves only loopback clients; "
                "create one with `shoal token create`"
            )
        secret = credentials(authorization)
        if secret is None:
            raise Unauthorized("this request needs a token: Authorization: Bearer <token>")
        grant = self._grants.get(hash_secret(secret))
        if grant is None:
            raise Unauthorized("the token is not valid (unknown or revoked)")
        return grant


@functools.lru_cache(maxsize=1024)
def is_loopback(host: str | None) -> bool:
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def credentials(authorization: str | None) -> str | None:
    """The secret in a Bearer header, or the password of HTTP basic auth (the user
    name is ignored), so rqlite clients that only know basic auth can send a token."""
    if not authorization:
        return None
    kind, _, value = authorization.strip().partition(" ")
    if kind.lower() == "bearer":
        return value.strip() or None
    if kind.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise Unauthorized("the basic auth header is not base64 of 'user:password'") from None
        return decoded.partition(":")[2] or None
    raise Unauthorized(f"unsupported authorization scheme {kind!r}; use Bearer or Basic")
