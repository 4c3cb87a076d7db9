"""The shoal command: every subcommand has help, and each does its one job."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from shoal.cli import build_parser, main
from shoal.cli.format import format_table


def subcommands(
    parser: argparse.ArgumentParser | None = None, prefix: str = ""
) -> dict[str, argparse.ArgumentParser]:
    """Every command and sub-command (`db create`, `token list`, ...) by its full name."""
    found: dict[str, argparse.ArgumentParser] = {}
    for action in (parser or build_parser())._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, command in action.choices.items():
                found[prefix + name] = command
                found.update(subcommands(command, f"{prefix}{name} "))
    return found


def test_the_commands_the_issue_names_exist() -> None:
    names = set(subcommands())
    assert {
        "serve",
        "db create",
        "db list",
        "db drop",
        "db backup",
        "db load",
        "token create",
        "shell",
        "version",
    } <= names


@pytest.mark.parametrize("name", sorted(subcommands()))
def test_every_command_has_help_and_description(name: str) -> None:
    command = subcommands()[name]
    assert command.description, name
    for action in command._actions:
        if action.dest != "help":
            assert action.help, f"{name} {action.dest} has no help"


def test_sql_and_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = str(tmp_path / "app.db")
    assert (
        main(["sql", path, "--write", "CREATE TABLE t(a, b); INSERT INTO t VALUES (1, NULL)"]) == 0
    )
    assert main(["sql", path, "SELECT a, b FROM t"]) == 0
    out = capsys.readouterr()
    assert "a  b\n-  ----\n1  NULL" in out.out
    assert "version 1" in out.err
    assert main(["log", path]) == 0
    out = capsys.readouterr()
    assert "CREATE TABLE t(a, b)" in out.out and "changeset" in out.out


def test_errors_are_reported_not_raised(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sql", str(tmp_path / "x.db"), "SELEC 1"]) == 1
    assert "SQLError" in capsys.readouterr().err


def test_format_table_aligns() -> None:
    assert format_table(["n", "name"], [(10, "a"), (2, b"xy")]) == (
        "n   name\n--  ---------\n10  a\n2   <2 bytes>"
    )


def test_console_script_runs() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "shoal", "version"], capture_output=True, text=True, check=True
    )
    assert done.stdout.startswith("shoal ")


def test_version_flag_and_a_bare_shoal_print_what_they_should() -> None:
    for argv, expected in ((["--version"], "shoal "), ([], "usage: shoal")):
        done = subprocess.run(
            [sys.executable, "-m", "shoal", *argv], capture_output=True, text=True, timeout=30
        )
        assert done.returncode == 0 and done.stdout.startswith(expected), done


def test_a_bare_name_in_shell_is_a_database_on_the_node_not_a_new_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shoal.cli.shell import shell_target

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SHOAL_URL", raising=False)
    assert shell_target("notes") == "http://127.0.0.1:4001/notes"
    monkeypatch.setenv("SHOAL_URL", "http://10.0.0.7:4001/")
    assert shell_target("notes") == "http://10.0.0.7:4001/notes"
    (tmp_path / "existing").write_bytes(b"")
    for as_given in ("existing", "notes.db", "./notes", "http://h:1/notes"):
        assert shell_target(as_given) == as_given
    assert not (tmp_path / "notes").exists()
