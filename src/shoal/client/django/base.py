"""Django's own SQLite backend with shoal as its DB-API driver.

Everything Django knows about SQLite holds (the SQL it writes, its schema editor,
its Python functions for date lookups and the like); what differs is the driver:

- the connection is `shoal.connect(NAME, **OPTIONS)`: a file, or an embedded
  replica with `OPTIONS = {"replica_of": URL, ...}`. A node's URL is refused:
  Django's SQL calls its Python functions, which a node's process has not got;
- Django's `%s` and `%(name)s` parameters become shoal's `?` and `:name`, and a
  Decimal is sent as text, as Django's sqlite3 adapter sends it;
- introspection leaves out shoal's own tables, so `inspectdb` and schema checks
  see only the application's;
- the test database is a file next to NAME unless TEST NAME says otherwise
  (":memory:" is a scratch file), and a replica has none: its writes are the node's.
"""

from __future__ import annotations

import decimal
import os
from collections.abc import Iterable, Mapping
from itertools import tee
from pathlib import Path
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db.backends.sqlite3 import base as sqlite3_backend
from django.db.backends.sqlite3._functions import register as register_functions
from django.db.backends.sqlite3.creation import DatabaseCreation as SQLiteCreation
from django.db.backends.sqlite3.introspection import DatabaseIntrospection as SQLiteIntrospection

import shoal
from shoal.client.dbapi import BaseConnection
from shoal.engine.policy import INTERNAL_PREFIX

__all__ = ["DatabaseWrapper"]

_SQLITE3_ONLY = ("detect_types", "check_same_thread", "uri")  # sqlite3.connect's, not shoal's


def _adapt(params: Any) -> Any:
    """Decimals as text: Django's SQLite backend registers that adapter with sqlite3."""
    if isinstance(params, Mapping):
        return {k: str(v) if isinstance(v, decimal.Decimal) else v for k, v in params.items()}
    return [str(v) if isinstance(v, decimal.Decimal) else v for v in params]


class CursorWrapper(shoal.Cursor):
    """A shoal cursor that takes Django's parameter styles."""

    __slots__ = ()
    convert_query = sqlite3_backend.SQLiteCursorWrapper.convert_query

    def execute(
        self, operation: str, parameters: Any = None, *, min_version: int | None = None
    ) -> CursorWrapper:
        if parameters is None:
            super().execute(operation, min_version=min_version)
            return self
        names = list(parameters) if isinstance(parameters, Mapping) else None
        query = self.convert_query(operation, param_names=names)
        super().execute(query, _adapt(parameters), min_version=min_version)
        return self

    def executemany(self, operation: str, seq_of_parameters: Iterable[Any]) -> CursorWrapper:
        peek, every = tee(iter(seq_of_parameters))
        first = next(peek, None)
        names = list(first) if isinstance(first, Mapping) else None
        query = self.convert_query(operation, param_names=names)
        super().executemany(query, [_adapt(params) for params in every])
        return self


class DatabaseIntrospection(SQLiteIntrospection):
    def get_table_list(self, cursor: Any) -> list[Any]:
        """The application's tables and views, without shoal's log and metadata."""
        tables = super().get_table_list(cursor)
        return [table for table in tables if not table.name.startswith(INTERNAL_PREFIX)]


class DatabaseCreation(SQLiteCreation):
    def _get_test_db_name(self) -> str:
        """A file for Django's tests: TEST NAME, or test_NAME beside NAME."""
        settings = self.connection.settings_dict
        if settings["OPTIONS"].get("replica_of"):
            raise ImproperlyConfigured(
                "a shoal replica has no test database (its writes go to the node); "
                "give the tests settings whose NAME is a file and no replica_of"
            )
        if settings["TEST"]["NAME"]:
            return str(settings["TEST"]["NAME"])
        name = Path(settings["NAME"])
        return ":memory:" if name.name == ":memory:" else str(name.with_name(f"test_{name.name}"))


class DatabaseWrapper(sqlite3_backend.DatabaseWrapper):
    display_name = "shoal"
    Database = shoal
    creation_class = DatabaseCreation
    introspection_class = DatabaseIntrospection

    def get_connection_params(self) -> dict[str, Any]:
        params: dict[str, Any] = super().get_connection_params()
        for option in _SQLITE3_ONLY:
            params.pop(option, None)
        if os.fspath(params["database"]).startswith(("http://", "https://")):
            raise ImproperlyConfigured(
                "a shoal node's URL cannot be Django's NAME: Django's SQL calls Python "
                "functions a node has not got. Use an embedded replica: NAME a local "
                "file and OPTIONS {'replica_of': URL}"
            )
        return params

    def get_new_connection(self, conn_params: dict[str, Any]) -> BaseConnection:
        """Opens it as Django's SQLite backend opens sqlite3's: its functions, foreign
        keys on (the database's setting: once set, a restatement), init_command."""
        conn = shoal.connect(**conn_params)
        register_functions(conn)
        for statement in ("PRAGMA foreign_keys = ON", *self.init_commands):
            if statement.strip():
                conn.execute(statement)
        return conn

    def create_cursor(self, name: str | None = None) -> CursorWrapper:
        cursor = self.connection.cursor(factory=CursorWrapper)
        assert isinstance(cursor, CursorWrapper)
        return cursor
