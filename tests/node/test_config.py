"""Settings: defaults, then the TOML file, then SHOAL_* variables, then flags."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from shoal.node.config import ConfigError, Settings, load_settings


def test_defaults_are_the_documented_ones() -> None:
    settings = load_settings()
    assert settings.data_dir == Path("shoal-data")
    assert (settings.host, settings.port) == ("127.0.0.1", 4001)
    assert settings.tokens == () and settings.admin_token is None


def test_file_then_environment_then_flags(tmp_path: Path) -> None:
    config = tmp_path / "shoal.toml"
    config.write_text(
        'address = "0.0.0.0:5000"\nmax_statements = 2\nstatement_seconds = 7\n'
        '[[tokens]]\nname = "ci"\nhash = "sha256:ab"\nscope = "write"\ndatabases = "app-*"\n'
    )
    settings = load_settings(
        config,
        env={"SHOAL_MAX_STATEMENTS": "3", "SHOAL_STATEMENT_SECONDS": "8", "SHOAL_IDLE_SECONDS": ""},
        flags={"statement_seconds": "9", "threads": None},
    )
    assert settings.address == "0.0.0.0:5000" and settings.max_statements == 3
    assert settings.statement_seconds == 9.0 and settings.idle_seconds == 300.0
    (token,) = settings.tokens
    assert (token.name, token.scope, token.databases) == ("ci", "write", ("app-*",))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("bogus = 1\n", "unknown setting(s): bogus"),
        ("max_statements = 'many'\n", "max_statements: 'many' is not a valid int"),
        ("max_statements = 0\n", "max_statements must be at least 1"),
        ("statement_seconds = true\n", "is not a valid float"),
        ("address = 'nowhere'\n", "is not HOST:PORT"),
        ("tls_cert = 'c.pem'\n", "TLS needs both"),
        ("[[tokens]]\nname = 'x'\n", "needs 'name' and 'hash'"),
        ("[[tokens]]\nname = 'x'\nhash = 'h'\ncolour = 1\n", "unknown key(s) in [[tokens]]"),
        ("not toml [", "Expected"),
        ("evict_seconds = -1\n", "evict_seconds must be 0 (never) or more"),
        ("evict_seconds = 60\narchive = 'off'\n", "evict_seconds needs an archive"),
        ("evict_seconds = 60\ncontrol_plane = 'sqlite:///cp.db'\n", "evict_seconds is for a node"),
    ],
)
def test_bad_settings_name_the_problem(tmp_path: Path, text: str, message: str) -> None:
    config = tmp_path / "shoal.toml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings(config)


def test_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="SHOAL_THREADS: 'x' is not a valid int"):
        load_settings(env={"SHOAL_THREADS": "x"})


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(Path("/nonexistent/shoal.toml"))


def test_ipv6_address() -> None:
    settings = Settings(address="[::1]:4001")
    assert (settings.host, settings.port) == ("::1", 4001)


def test_every_setting_is_documented() -> None:
    text = (Path(__file__).parents[2] / "docs" / "server.md").read_text()
    for name in Settings.__dataclass_fields__:
        if name != "tokens":
            assert f"`{name}`" in text, f"{name} is missing from docs/server.md"
