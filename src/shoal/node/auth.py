"""Who may do what: tokens with a scope, limited to database name patterns.

A token is a random secret shown once when it is made; the node keeps only its
SHA-256. (A slow password hash buys nothing for 192 random bits, and a fast one
keeps the check off the request's critical path.) Tokens live in the data
directory's `node.db`, so `shoal token create` works while the node runs: the
node re-reads the table when SQLite says it changed, off the event loop, once a
second (so a revocation takes effect within about a second) and whenever a
request's credentials are refused (so a token works as soon as it is made).

Besides tokens, each start of a node writes a fresh *local admin credential* to
`DATA_DIR/local-admin-token`, readable by the node's OS user only: the shoal CLI
on that machine sends it when it is given no token, so creating the first token
never locks the node's own administrator out. It is accepted from loopback only.

Scopes are ordered: `read` < `write` < `admin`. `write` runs statements that
change data; `admin` also creates, drops, loads and backs up whole databases.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import fnmatch
import functools
import hashlib
import hmac
import ipaddress
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import cast

import apsw

from shoal.errors import Forbidden, InvalidRequest, Unauthorized
from shoal.node.config import TokenSpec

__all__ = [
    "LOCAL_ADMIN_FILE",
    "Authenticator",
    "Grant",
    "Scope",
    "TokenInfo",
    "TokenStore",
    "credentials",
    "hash_secret",
    "is_loopback",
    "local_admin_secret",
    "write_local_admin",
]

TOKEN_PREFIX = "shoal_"
LOCAL_ADMIN_FILE = "local-admin-token"


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
        return any(p == "*" or fnmatch.fnmatchcase(database, p) for p in self.databases)

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
LOCAL_ADMIN = Grant("local admin credential", Scope.ADMIN, ("*",))


@dataclass(frozen=True)
class TokenInfo:
    name: str
    scope: str
    databases: tuple[str, ...]
    created: float


def hash_secret(secret: str) -> str:
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()


def _new_secret() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(24)


def write_local_admin(data_dir: Path) -> str:
    """Makes this start's local admin credential and writes it to DATA_DIR/local-admin-token
    with mode 0600; returns the secret. Whoever can read the node's files can
    administer it anyway (PostgreSQL's peer authentication rests on the same idea),
    and a new secret each start makes a copied file useless once the node restarts."""
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = _new_secret()
    path = data_dir / LOCAL_ADMIN_FILE
    partial = path.with_name(path.name + ".partial")
    partial.unlink(missing_ok=True)
    # O_EXCL: never through a file or link someone else left there; 0600 from the start.
    handle = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(handle, "w") as file:
        file.write(secret + "\n")
    os.replace(partial, path)
    return secret


def local_admin_secret(data_dir: Path) -> str | None:
    """The local admin credential of the node whose data directory is `data_dir`, or
    None when there is none or this OS user may not read it."""
    try:
        return (data_dir / LOCAL_ADMIN_FILE).read_text().strip() or None
    except OSError:
        return None


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

    def create(
        self, name: str, scope: str, databases: tuple[str, ...], *, replace: bool = False
    ) -> str:
        """Makes a token, or with `replace` gives an existing one of that name a new
        secret, scope and patterns (its old secret stops working as a revoked one
        does); returns the secret, which is not kept anywhere."""
        Scope.parse(scope)
        if not name or not databases:
            raise InvalidRequest("a token needs a name and at least one database pattern")
        secret = _new_secret()
        upsert = (
            " ON CONFLICT(name) DO UPDATE SET hash = excluded.hash, scope = excluded.scope, "
            "databases = excluded.databases, created = excluded.created"
            if replace
            else ""
        )
        try:
            self._conn.execute(
                "INSERT INTO tokens VALUES (?, ?, ?, ?, ?)" + upsert,
                (name, hash_secret(secret), scope.lower(), "\n".join(databases), time.time()),
            )
        except apsw.ConstraintError:
            raise InvalidRequest(
                f"a token named {name!r} exists already: add --replace to give it a new "
                f"secret (the old one stops working), or pick another name"
            ) from None
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


Offload = Callable[[Callable[[], None]], Awaitable[None]]
"""Runs a blocking call off the event loop (the node's read pool)."""


class Authenticator:
    """Turns a request's credentials into a Grant, from an in-memory copy of the tokens."""

    def __init__(
        self,
        store: TokenStore,
        configured: tuple[TokenSpec, ...],
        admin_token: str | None,
        *,
        local_admin: str,
        data_dir: Path,
        offload: Offload,
    ) -> None:
        self._store = store
        self._fixed = {
            spec.hash: _grant(spec.name, spec.scope, spec.databases) for spec in configured
        }
        if admin_token:
            self._fixed[hash_secret(admin_token)] = Grant("admin-token", Scope.ADMIN, ("*",))
        self._local_hash = hash_secret(local_admin)
        self._data_dir = data_dir.absolute()
        self._offload = offload
        self._seen_version = -1
        self._grants: dict[str, Grant] = dict(self._fixed)
        self._generation = 0  # counts changes of _grants
        self._reloading = asyncio.Lock()
        self._asked = self._reloaded = 0  # reloads asked for, and asked for before the last
        self.refresh()

    @property
    def open(self) -> bool:
        """True when no token exists: then only loopback clients are served. (The
        local admin credential is not a token: it does not close the node.)"""
        return not self._grants

    def refresh(self) -> None:
        """Re-reads stored tokens if the file changed (blocking: run it off the loop)."""
        version = self._store.data_version()
        if version != self._seen_version:
            self._grants = {**self._store.grants(), **self._fixed}
            self._seen_version = version
            self._generation += 1

    async def reload(self) -> None:
        """`refresh` off the event loop. Callers that arrive while one runs share the
        next: at most one runs at a time and one waits, however many refused
        requests arrive, and each caller returns after a refresh that began after it
        asked, so it sees every token written before it called."""
        self._asked += 1
        asked = self._asked
        async with self._reloading:
            if self._reloaded >= asked:
                return  # a refresh that began after we asked has finished
            covered = self._asked
            await self._offload(self.refresh)
            self._reloaded = covered

    async def authenticate(self, authorization: str | None, client_host: str | None) -> Grant:
        """The grant for a request, or Unauthorized. A refusal first re-reads the token
        file, since the token may have been made a moment ago by `shoal token create`."""
        try:
            return self._grant_of(authorization, client_host)
        except Unauthorized:
            generation = self._generation
            await self.reload()
            if self._generation == generation:
                raise
            return self._grant_of(authorization, client_host)

    def _grant_of(self, authorization: str | None, client_host: str | None) -> Grant:
        loopback = is_loopback(client_host)
        secret = credentials(authorization)
        hashed = None if secret is None else hash_secret(secret)
        if hashed is not None and hmac.compare_digest(hashed, self._local_hash):
            if not loopback:
                raise Unauthorized(
                    "the node's local admin credential is accepted from loopback only "
                    "(127.0.0.1, ::1); from elsewhere send a token"
                )
            return LOCAL_ADMIN
        if self.open:
            if loopback:
                return ANYONE_ON_LOOPBACK
            raise Unauthorized(
                f"this node has no tokens and serves only loopback clients: {self._how(False)}"
            )
        if hashed is None:
            raise Unauthorized(
                f"this node has tokens, so every request needs one: {self._how(loopback)}"
            )
        grant = self._grants.get(hashed)
        if grant is None:
            raise Unauthorized(
                "the token is not valid (unknown or revoked; a local admin credential is new "
                f"at each start of its node): {self._how(loopback)}"
            )
        return grant

    def _how(self, loopback: bool) -> str:
        """What a refused client can do. A loopback client may be on the node's machine,
        so it also learns the data directory, whose local admin credential the CLI uses."""
        if not loopback:
            return (
                "send 'Authorization: Bearer <token>' (the CLI: --token or SHOAL_TOKEN; "
                "shoal.connect: token= or SHOAL_TOKEN), a token made on the node's machine "
                "with `shoal token create NAME --scope read|write|admin`"
            )
        data_dir = self._data_dir
        return (
            f"pass --token or set SHOAL_TOKEN (make one with `shoal token create NAME "
            f"--scope read|write|admin --data-dir {data_dir}`), or, on this machine, give "
            f"the CLI --data-dir {data_dir} (or SHOAL_DATA_DIR) and it sends the node's "
            "local admin credential"
        )


@functools.lru_cache(maxsize=1024)
@functools.lru_cache(maxsize=1024)
def is_loopback(host: str | None) -> bool:
    """Cached: a node hears from few addresses, and parsing one costs a request's while."""
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
