"""SQLAlchemy dialects for shoal: SQLAlchemy's own SQLite dialect over shoal's DB-API.

The SQL is SQLite's, so everything SQLAlchemy knows about SQLite (types, DDL,
reflection, `sqlite_*` table options, `with_variant(..., "sqlite")`) holds as it
is; only the driver changes. Three URL forms, one per kind of connection:

    shoal:///app.db                                   a file, in process
    shoal:///local.db?replica_of=http://host:4001/db  an embedded replica of a node's database
    shoal+http://host:4001/db                         a database on a node (shoal+https too)

Query options: `token` (a node's bearer token; by default $SHOAL_TOKEN),
`timeout` (seconds per HTTP request), `max_lag_seconds` (replicas), and
`replica_of` given more than once for several nodes. Both dialects are entry
points in the `sqlalchemy.dialects` group, so `create_engine` finds them once
shoal is installed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

from sqlalchemy.dialects.sqlite.base import SQLiteDialect
from sqlalchemy.engine import URL
from sqlalchemy.engine.interfaces import ConnectArgsType, DBAPIConnection, IsolationLevel

import shoal
from shoal.engine.policy import INTERNAL_PREFIX
from shoal.errors import InterfaceError, Unavailable

__all__ = ["ShoalDialect", "ShoalHTTPDialect", "ShoalHTTPSDialect"]

# The options a URL's query may carry, and how each becomes a connect() argument.
_FLOAT_OPTIONS = ("timeout", "max_lag_seconds")


class ShoalDialect(SQLiteDialect):
    """`shoal:///path`: a database file in process, or an embedded replica of one."""

    driver = "shoal"
    supports_statement_cache = True
    supports_schemas = False  # a schema is an ATTACHed file, which shoal refuses

    @classmethod
    def import_dbapi(cls) -> ModuleType:
        return shoal

    def create_connect_args(self, url: URL) -> ConnectArgsType:
        if url.host or url.port:
            raise InterfaceError(
                f"{url.render_as_string(hide_password=True)}: a file URL has no host; "
                "write shoal:///relative.db or shoal:////absolute/path.db, or "
                "shoal+http://host:4001/db for a node"
            )
        if not url.database or url.database == ":memory:":
            raise InterfaceError(
                "shoal:// needs a database file (shoal:///app.db): every pooled connection "
                "must see the same database, and an in-memory one is private to its connection"
            )
        return [url.database], _options(url, allowed=("token", "replica_of", *_FLOAT_OPTIONS))

    def _get_server_version_info(self, connection: Any) -> tuple[int, ...]:
        return shoal.sqlite_version_info

    # shoal runs every transaction at SQLite's one level (SERIALIZABLE, as WAL gives
    # it); AUTOCOMMIT is the DB-API connection's own autocommit mode.
    def get_isolation_level_values(
        self, dbapi_connection: DBAPIConnection
    ) -> Sequence[IsolationLevel]:
        return ["SERIALIZABLE", "AUTOCOMMIT"]

    def get_isolation_level(self, dbapi_connection: DBAPIConnection) -> IsolationLevel:
        return "AUTOCOMMIT" if _shoal_connection(dbapi_connection).autocommit else "SERIALIZABLE"

    def set_isolation_level(self, dbapi_connection: DBAPIConnection, level: IsolationLevel) -> None:
        _shoal_connection(dbapi_connection).autocommit = level == "AUTOCOMMIT"

    def detect_autocommit_setting(self, dbapi_conn: DBAPIConnection) -> bool:
        return bool(_shoal_connection(dbapi_conn).autocommit)

    def on_connect(self) -> Callable[[DBAPIConnection], None] | None:
        """The `REGEXP` operator (`regexp_match`), as SQLAlchemy's sqlite3 dialect
        gives it: a Python function on each connection, so in process only."""

        def add_regexp(dbapi_connection: DBAPIConnection) -> None:
            _shoal_connection(dbapi_connection).create_function(
                "regexp", 2, _regexp, deterministic=True
            )

        return add_regexp

    def is_disconnect(self, e: Exception, connection: Any, cursor: Any) -> bool:
        """A closed connection: the pool replaces it. (A replica's node that cannot be
        reached is not one: its reads go on from the local copy.)"""
        return isinstance(e, shoal.InterfaceError) and "is closed" in str(e)

    def get_table_names(
        self,
        connection: Any,
        schema: Any = None,
        sqlite_include_internal: Any = False,
        **kw: Any,
    ) -> Any:
        """The application's tables: shoal's own log and metadata are not among them,
        so Alembic's autogenerate never proposes to drop them."""
        names = super().get_table_names(  # type: ignore[no-untyped-call]
            connection, schema, sqlite_include_internal, **kw
        )
        return [name for name in names if not name.startswith(INTERNAL_PREFIX)]


class ShoalHTTPDialect(ShoalDialect):
    """`shoal+http://host:4001/db`: a database on a node, over its HTTP API."""

    scheme = "http"
    supports_statement_cache = True  # SQLAlchemy asks each class, not its bases

    def on_connect(self) -> None:
        """Nothing: a node runs the SQL, and it has no Python functions of ours."""
        return None

    def is_disconnect(self, e: Exception, connection: Any, cursor: Any) -> bool:
        """Also a node that cannot be reached: the pool starts afresh."""
        return isinstance(e, Unavailable) or super().is_disconnect(e, connection, cursor)

    def create_connect_args(self, url: URL) -> ConnectArgsType:
        name = (url.database or "").strip("/")
        if not url.host or not name or "/" in name:
            raise InterfaceError(
                f"{url.render_as_string(hide_password=True)}: write "
                f"shoal+{self.scheme}://host:port/database"
            )
        port = f":{url.port}" if url.port else ""
        target = f"{self.scheme}://{url.host}{port}/{name}"
        return [target], _options(url, allowed=("token", "timeout"))


class ShoalHTTPSDialect(ShoalHTTPDialect):
    """`shoal+https://host/db`: the same, over TLS."""

    scheme = "https"
    supports_statement_cache = True


def _regexp(pattern: str, text: str | None) -> bool | None:
    """`text REGEXP pattern`: whether Python's `re` finds the pattern in the text."""
    return None if text is None else re.search(pattern, text) is not None


def _options(url: URL, allowed: tuple[str, ...]) -> dict[str, Any]:
    """The URL's query as connect() keywords; an unknown one is refused by name."""
    options: dict[str, Any] = {}
    for key, value in url.query.items():
        if key not in allowed:
            raise InterfaceError(
                f"unknown option {key!r} in a {url.drivername}:// URL; "
                f"known: {', '.join(sorted(allowed))}"
            )
        values = [value] if isinstance(value, str) else list(value)
        if key == "replica_of":
            options[key] = values[0] if len(values) == 1 else values
        elif key in _FLOAT_OPTIONS:
            try:
                options[key] = float(values[-1])
            except ValueError:
                raise InterfaceError(f"option {key} must be a number of seconds") from None
        else:
            options[key] = values[-1]
    return options


def _shoal_connection(dbapi_connection: Any) -> Any:
    """The shoal connection behind SQLAlchemy's pool proxy, if it hands one."""
    return getattr(dbapi_connection, "dbapi_connection", dbapi_connection)
