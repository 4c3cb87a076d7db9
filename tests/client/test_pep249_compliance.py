"""The PEP 249 compliance suite (dbapi-compliance's dbapi20) on the embedded
connection. The remote connection shares its cursor and connection classes
(client/dbapi.py); tests/system/test_pep249_remote.py runs the suite on it too."""

from __future__ import annotations

import shutil
import tempfile
from typing import Any

import dbapi20

import shoal


class TestEmbeddedConnection(dbapi20.DatabaseAPI20Test):  # type: ignore[misc]
    driver = shoal
    connect_kw_args: dict[str, Any] = {}  # noqa: RUF012 - the suite's own class attribute

    def setUp(self) -> None:
        self.directory = tempfile.mkdtemp()
        self.connect_args = (f"{self.directory}/compliance.db",)

    def tearDown(self) -> None:
        super().tearDown()
        shutil.rmtree(self.directory, ignore_errors=True)

    # The suite's own placeholders for what only a driver can provide:
    def test_nextset(self) -> None:
        """nextset is optional; shoal's cursors hold one result set."""

    def test_setoutputsize(self) -> None:
        """setoutputsize may do nothing (PEP 249); shoal's does nothing."""

    def test_non_idempotent_close(self) -> None:
        """The suite's own comment: 'reasonable persons differ'. shoal's close() is
        idempotent, as sqlite3's is: a second close (a `with` block and a finally,
        or a node that vanished) must not raise. Everything else after close does."""
        con = self._connect()
        con.close()
        con.close()
        self.assertRaises(shoal.Error, con.cursor)


def test_description_types_compare_by_sqlite_affinity(tmp_path: Any) -> None:
    declared = {
        "a": ("varchar(20)", shoal.STRING),
        "b": ("NVARCHAR", shoal.STRING),
        "c": ("CLOB", shoal.STRING),
        "d": ("BIGINT", shoal.NUMBER),
        "e": ("DECIMAL(10,2)", shoal.NUMBER),
        "f": ("DOUBLE PRECISION", shoal.NUMBER),
        "g": ("BLOB", shoal.BINARY),
        "h": ("TIMESTAMP", shoal.DATETIME),
        "i": ("date", shoal.DATETIME),
    }
    conn = shoal.connect(str(tmp_path / "types.db"))
    columns = ", ".join(f"{name} {kind}" for name, (kind, _) in declared.items())
    conn.execute(f"CREATE TABLE t({columns})")
    description = conn.execute("SELECT * FROM t").description
    assert description is not None
    for (name, type_code, *_), (kind, expected) in zip(description, declared.values(), strict=True):
        assert type_code == expected, (name, kind)
        others = [t for t in (shoal.STRING, shoal.NUMBER, shoal.BINARY, shoal.DATETIME)]
        assert [t for t in others if type_code == t] == [expected], (name, kind)
    conn.close()
