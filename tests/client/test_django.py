"""Django on shoal (ENGINE "shoal.client.django") on a file: its migrations
(Django's own apps and a table remake), its ORM with the Python functions its SQL
calls, its test runner, and the log replaying what all of them wrote. The same
on an embedded replica: tests/system/test_django.py.

Django's settings belong to a process, so each step runs `python -m django` (or
the project's exercise script) in one of its own, on tests/client/django_project.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.client.test_dialect import assert_log_replays_to_the_same_data

PROJECT = Path(__file__).parent / "django_project"


def run(
    *args: str, db: Path | str, replica_of: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Runs `args` in the project: `python -m django ARGS`, or a script of it."""
    env = {
        **os.environ,
        "SHOP_DB": str(db),
        "SHOP_REPLICA_OF": replica_of or "",
        "DJANGO_SETTINGS_MODULE": "settings",
        "PYTHONPATH": str(PROJECT),
    }
    command = [*args] if args[0].endswith(".py") else ["-m", "django", *args]
    return subprocess.run(
        [sys.executable, *command],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def django(*args: str, db: Path | str, replica_of: str | None = None) -> str:
    """`run`, which must succeed; its output."""
    done = run(*args, db=db, replica_of=replica_of)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def test_migrations_the_orm_and_the_log_on_a_file(tmp_path: Path) -> None:
    db = tmp_path / "shop.db"
    applied = django("migrate", db=db)
    assert "Applying auth.0012_alter_user_first_name_max_length... OK" in applied
    assert "Applying shop.0002_widen_total_add_note... OK" in applied  # a table remake
    assert "exercised" in django("exercise.py", db=db)
    django("migrate", "shop", "zero", db=db)  # every migration of the app undone
    django("migrate", db=db)
    assert_log_replays_to_the_same_data(db)


def test_djangos_test_runner_makes_and_removes_its_database(tmp_path: Path) -> None:
    db = tmp_path / "shop.db"
    ran = django("test", "shop", "--noinput", db=db)
    assert "Ran 2 tests" in ran and "OK" in ran
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # test_shop.db made and removed


def test_a_nodes_url_is_refused_with_what_to_write_instead() -> None:
    done = run("migrate", db="http://127.0.0.1:9/shop")
    assert done.returncode != 0
    assert "ImproperlyConfigured: a shoal node's URL cannot be Django's NAME" in done.stderr
    assert "OPTIONS {'replica_of': URL}" in done.stderr
