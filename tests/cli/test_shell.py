"""shoal.cli.shell: statements, dot-commands and output modes over an embedded connection."""

from __future__ import annotations

import argparse
import io
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import shoal
from shoal.cli.shell import add_shell_command, run_shell

SMALL_TABLE = """
CREATE TABLE people(id INTEGER PRIMARY KEY, name TEXT, score REAL, photo BLOB);
INSERT INTO people VALUES (1, 'ann', 1.5, NULL), (2, 'bob, "jr"', NULL, x'0102');
"""


def open_file(path: Path) -> shoal.Connection:
    """An embedded connection, as the shell gets one from `shoal shell app.db`."""
    connection = shoal.connect(path)
    assert isinstance(connection, shoal.Connection)
    return connection


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[shoal.Connection]:
    connection = open_file(tmp_path / "app.db")
    yield connection
    connection.close()


def shell(
    connection: shoal.Connection, text: str, *, interactive: bool = False, mode: str = "table"
) -> tuple[int, str, str]:
    """Runs the shell on `text`; returns the exit code, stdout and stderr."""
    stdout, stderr = io.StringIO(), io.StringIO()
    code = run_shell(
        connection,
        stdin=io.StringIO(text),
        stdout=stdout,
        stderr=stderr,
        interactive=interactive,
        history_file=None,
        mode=mode,
    )
    return code, stdout.getvalue(), stderr.getvalue()


def ok(connection: shoal.Connection, text: str, mode: str = "table") -> str:
    """The output of `text`, which must run without an error."""
    code, out, err = shell(connection, text, mode=mode)
    assert (code, err) == (0, "")
    return out


def test_table_mode(conn: shoal.Connection) -> None:
    assert ok(conn, SMALL_TABLE + "SELECT * FROM people;") == (
        "id  name       score  photo\n"
        "--  ---------  -----  ---------\n"
        "1   ann        1.5    NULL\n"
        '2   bob, "jr"  NULL   <2 bytes>\n'
    )


def test_csv_mode(conn: shoal.Connection) -> None:
    assert ok(conn, SMALL_TABLE + ".mode csv\nSELECT * FROM people;") == (
        'id,name,score,photo\n1,ann,1.5,\n2,"bob, ""jr""",,AQI=\n'
    )


def test_json_mode(conn: shoal.Connection) -> None:
    assert ok(conn, SMALL_TABLE + ".mode json\nSELECT * FROM people;") == (
        '[{"id": 1, "name": "ann", "score": 1.5, "photo": null},\n'
        ' {"id": 2, "name": "bob, \\"jr\\"", "score": null, "photo": "AQI="}]\n'
    )
    assert ok(conn, "SELECT 1e999 AS big, -1e999 AS small WHERE 0;") == "big  small\n---  -----\n"
    assert ok(conn, "SELECT 1e999 AS big, -1e999 AS small, 'é' AS e;", mode="json") == (
        '[{"big": 1e999, "small": -1e999, "e": "é"}]\n'  # JSON numbers; Infinity is not JSON
    )
    assert ok(conn, "SELECT 1 AS a WHERE 0;", mode="json") == "[]\n"


def test_empty_result_prints_its_header(conn: shoal.Connection) -> None:
    assert ok(conn, SMALL_TABLE + "SELECT id FROM people WHERE id > 5;") == "id\n--\n"
    assert ok(conn, ".mode csv\nSELECT id FROM people WHERE id > 5;") == "id\n"


def test_statements_may_span_lines_and_share_them(conn: shoal.Connection) -> None:
    out = ok(conn, "SELECT\n  'a;b' AS x,\n  2 AS y\n;\n\nSELECT 3 AS z; SELECT 4 AS w;\n")
    assert out == "x    y\n---  -\na;b  2\nz\n-\n3\nw\n-\n4\n"


def test_a_trigger_body_is_one_statement(conn: shoal.Connection) -> None:
    ok(
        conn,
        "CREATE TABLE t(a); CREATE TABLE log(a);\n"
        "CREATE TRIGGER t_in AFTER INSERT ON t BEGIN\n"
        "  INSERT INTO log VALUES (new.a);\n"
        "  INSERT INTO log VALUES (new.a * 10);\n"
        "END;\n"
        "INSERT INTO t VALUES (1);\n",
    )
    assert conn.execute("SELECT a FROM log").fetchall() == [(1,), (10,)]


def test_a_last_statement_without_a_semicolon_still_runs(conn: shoal.Connection) -> None:
    assert ok(conn, "-- a comment\nSELECT 7 AS n") == "n\n-\n7\n"
    assert ok(conn, "SELECT 1 AS n; -- trailing comment\n/* and another */") == "n\n-\n1\n"
    assert ok(conn, ";;\n/* nothing */;\nSELECT 2 AS n;") == "n\n-\n2\n"


def test_each_statement_commits_on_its_own(conn: shoal.Connection, tmp_path: Path) -> None:
    ok(conn, "CREATE TABLE t(a);\nINSERT INTO t VALUES (1);\n")
    assert conn.version == 2 and not conn.in_transaction
    with open_file(tmp_path / "app.db") as other:
        assert other.execute("SELECT a FROM t").fetchall() == [(1,)]


def test_begin_holds_commits_until_the_user_ends_it(conn: shoal.Connection) -> None:
    ok(conn, "CREATE TABLE t(a);\nBEGIN;\nINSERT INTO t VALUES (1);\nINSERT INTO t VALUES (2);\n")
    assert conn.in_transaction  # piped input ended inside the user's transaction
    conn.rollback()
    ok(
        conn,
        "BEGIN; INSERT INTO t VALUES (3); SAVEPOINT s; INSERT INTO t VALUES (4);\n"
        "ROLLBACK TO s; INSERT INTO t VALUES (5); ROLLBACK;",  # after TO s, still open
    )
    assert conn.execute("SELECT a FROM t").fetchall() == []
    ok(conn, "BEGIN; INSERT INTO t VALUES (6); COMMIT;")
    assert conn.execute("SELECT a FROM t").fetchall() == [(6,)]
    assert conn.version == 2  # the CREATE, then one transaction


def test_errors_are_reported_and_the_shell_goes_on(conn: shoal.Connection) -> None:
    code, out, err = shell(conn, "SELECT nope;\nSELEKT 1;\nSELECT 2 AS two;\n")
    assert code == 1
    assert out == "two\n---\n2\n"
    lines = err.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("error: SQLError: ") and "nope" in lines[0]
    assert lines[1].startswith("error: SQLError: ") and "SELEKT" in lines[1]


def test_a_failed_write_leaves_no_transaction_open(conn: shoal.Connection) -> None:
    code, _, err = shell(conn, "CREATE TABLE t(a UNIQUE);\nINSERT INTO t VALUES (1), (1);\n")
    assert code == 1 and err.startswith("error: IntegrityError: ")
    assert not conn.in_transaction  # the writer is free for others


def test_piped_input_without_errors_exits_zero_and_prints_no_prompt(
    conn: shoal.Connection,
) -> None:
    assert shell(conn, "SELECT 1 AS one;\n") == (0, "one\n---\n1\n", "")


def test_interactive_prompts_and_never_fails(conn: shoal.Connection) -> None:
    code, out, err = shell(conn, "SELECT\n1 AS one;\nSELECT nope;\n", interactive=True)
    assert code == 0 and "nope" in err
    banner, rest = out.split("\n", 1)
    assert banner.startswith(f"shoal {shoal.__version__}, database version 0.")
    assert rest == "shoal>   ...> one\n---\n1\nshoal> shoal> "


def test_help_lists_every_command(conn: shoal.Connection) -> None:
    out = ok(conn, ".help\n")
    for name in (".dump", ".exit", ".help", ".mode", ".quit", ".read", ".schema", ".tables"):
        assert f"\n{name} " in f"\n{out}", name
    assert ".timer on|off" in out


def test_tables_lists_user_tables_and_views(conn: shoal.Connection) -> None:
    setup = (
        "CREATE TABLE zebra(a); CREATE TABLE apple(b); CREATE VIEW middle AS SELECT 1;"
        "CREATE VIRTUAL TABLE docs USING fts5(body); CREATE INDEX apple_b ON apple(b);"
        "CREATE TABLE s(id INTEGER PRIMARY KEY AUTOINCREMENT);\n"
    )
    assert ok(conn, setup + ".tables\n") == "apple\ndocs\nmiddle\ns\nzebra\n"


def test_schema_of_everything_or_of_one_table(conn: shoal.Connection) -> None:
    ok(conn, 'CREATE TABLE a(x); CREATE INDEX a_x ON a(x); CREATE TABLE "b c"(y);\n')
    assert ok(conn, ".schema\n") == (
        'CREATE TABLE a(x);\nCREATE INDEX a_x ON a(x);\nCREATE TABLE "b c"(y);\n'
    )
    assert ok(conn, ".schema A\n") == "CREATE TABLE a(x);\nCREATE INDEX a_x ON a(x);\n"
    assert ok(conn, '.schema "b c"\n') == 'CREATE TABLE "b c"(y);\n'
    assert ok(conn, ".schema nothing\n") == ""


def test_dump_reloads_to_the_same_checksum(conn: shoal.Connection, tmp_path: Path) -> None:
    ok(
        conn,
        SMALL_TABLE + "CREATE VIEW names AS SELECT name FROM people;"
        "CREATE TABLE s(id INTEGER PRIMARY KEY AUTOINCREMENT, v); INSERT INTO s(v) VALUES (1);"
        "PRAGMA user_version = 3;\n",
    )
    dumped = ok(conn, ".dump\n")
    assert dumped.startswith("BEGIN;\nCREATE TABLE people(") and dumped.endswith("\nCOMMIT;\n")
    script = tmp_path / "dump.sql"
    script.write_text(dumped)
    with open_file(tmp_path / "copy.db") as copy:
        assert ok(copy, f".read {script}\n") == ""
        assert copy.database.checksum() == conn.database.checksum()
        assert copy.version == 1  # loaded as one transaction


def test_read_runs_statements_and_commands_from_a_file(
    conn: shoal.Connection, tmp_path: Path
) -> None:
    script = tmp_path / "my script.sql"
    script.write_text("CREATE TABLE t(a);\nINSERT INTO t\n  VALUES ('x;y');\n.mode csv\n")
    assert ok(conn, f'.read "{script}"\nSELECT a FROM t;\n') == "a\nx;y\n"


def test_read_reports_what_fails(conn: shoal.Connection, tmp_path: Path) -> None:
    code, _, err = shell(conn, f".read {tmp_path / 'missing.sql'}\n")
    assert code == 1 and err.startswith("error: FileNotFoundError: ")
    script = tmp_path / "bad.sql"
    script.write_text("SELECT nope;\nCREATE TABLE after_the_error(a);\n")
    code, _, err = shell(conn, f".read {script}\n.tables\n")
    assert code == 1 and "nope" in err


def test_timer(conn: shoal.Connection) -> None:
    out = ok(conn, ".timer on\nSELECT 1 AS one;\nCREATE TABLE t(a);\n.timer off\nSELECT 2 AS b;\n")
    assert re.fullmatch(r"one\n---\n1\ntime: \d+\.\d{3} s\ntime: \d+\.\d{3} s\nb\n-\n2\n", out)


@pytest.mark.parametrize("command", [".quit", ".exit"])
def test_quit_stops_reading(conn: shoal.Connection, command: str) -> None:
    assert ok(conn, f"SELECT 1 AS a;\n{command}\nSELECT 2 AS b;\n") == "a\n-\n1\n"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (".nonsense", "error: UsageError: unknown command .nonsense; .help lists them"),
        (".mode xml", "error: UsageError: usage: .mode table|csv|json how results are printed"),
        (".timer maybe", "error: UsageError: usage: .timer on|off        print how long"),
        (".tables extra", "error: UsageError: usage: .tables "),
        (".read", "error: UsageError: usage: .read FILE "),
        ('.read "unclosed', "error: UsageError: No closing quotation"),
    ],
)
def test_bad_dot_commands(conn: shoal.Connection, line: str, message: str) -> None:
    code, out, err = shell(conn, f"{line}\nSELECT 1 AS a;\n")
    assert (code, out) == (1, "a\n-\n1\n")
    assert err.startswith(message)


def test_history_is_loaded_and_saved(
    conn: shoal.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    history = tmp_path / "history"
    history.write_text("SELECT 'old';\n")
    monkeypatch.setattr(sys, "stdin", io.StringIO("SELECT\n  1 AS one;\n\n.tables\n"))
    stdout, stderr = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stdout", stdout)
    code = run_shell(
        conn,
        stdin=sys.stdin,
        stdout=sys.stdout,
        stderr=stderr,
        interactive=True,
        history_file=history,
    )
    out = stdout.getvalue()
    assert (code, stderr.getvalue()) == (0, "")
    assert "shoal> " in out and "  ...> " in out and "one\n---\n1\n" in out
    saved = history.read_text().splitlines()
    assert saved[-4:] == ["SELECT 'old';", "SELECT", "  1 AS one;", ".tables"]


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="shoal")
    add_shell_command(root.add_subparsers(dest="command", required=True))
    return root


def test_the_command_has_help_for_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOAL_TOKEN", "from-env")
    root = parser()
    action = next(a for a in root._actions if isinstance(a, argparse._SubParsersAction))
    command = action.choices["shell"]
    assert command.description
    assert all(a.help for a in command._actions if a.dest != "help")
    args = root.parse_args(["shell", "app.db"])
    assert (args.target, args.token, args.mode, args.timer) == (
        "app.db",
        "from-env",
        "table",
        False,
    )
    args = root.parse_args(["shell", "app.db", "--token", "t", "--mode", "json", "--timer"])
    assert (args.token, args.mode, args.timer) == ("t", "json", True)
    with pytest.raises(SystemExit):
        root.parse_args(["shell", "app.db", "--mode", "xml"])


def test_the_command_runs_piped_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("CREATE TABLE t(a);\nSELECT 1 AS a;\n"))
    args = parser().parse_args(["shell", str(tmp_path / "app.db"), "--mode", "csv", "--timer"])
    assert args.run(args) == 0
    out = capsys.readouterr().out
    assert re.fullmatch(r"time: \S+ s\na\n1\ntime: \S+ s\n", out)
    monkeypatch.setattr(sys, "stdin", io.StringIO("SELECT nope;\n"))
    assert args.run(args) == 1
    assert capsys.readouterr().err.startswith("error: SQLError: ")


def test_the_command_reports_a_server_it_cannot_reach(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("SHOAL_TOKEN", raising=False)
    monkeypatch.setattr(sys, "stdin", io.StringIO("SELECT 1;\n"))
    args = parser().parse_args(["shell", "http://127.0.0.1:9/app"])
    assert args.run(args) == 1
    assert capsys.readouterr().err.startswith("error: ")
