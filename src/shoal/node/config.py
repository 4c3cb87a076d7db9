"""A node's settings: defaults, then a TOML file, then `SHOAL_*` variables, then flags.

Every setting is one field of `Settings`; its metadata gives the help text, so the
flags of `shoal serve`, the environment variables and the TOML keys are all made
from this one table and cannot drift apart. A value that does not parse is an
error naming where it came from, never a silent default.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shoal.errors import InvalidRequest

__all__ = ["ConfigError", "Settings", "TokenSpec", "env_name", "load_settings"]

MiB = 1024 * 1024
_NODE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class ConfigError(InvalidRequest):
    """A setting that does not parse, or a key the node does not know."""


@dataclass(frozen=True)
class TokenSpec:
    """A token given in the configuration file: only its hash is written down."""

    name: str
    hash: str  # "sha256:<hex>", as `shoal token hash` prints it
    scope: str = "read"
    databases: tuple[str, ...] = ("*",)


def _setting(default: Any, help: str) -> Any:  # noqa: A002 - the word the table uses
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class Settings:
    """Everything `shoal serve` can be told."""

    data_dir: Path = _setting(Path("shoal-data"), "directory of the node's databases")
    address: str = _setting("127.0.0.1:4001", "HOST:PORT the HTTP API listens on")
    admin_token: str | None = _setting(
        None, "a secret accepted as an admin token for every database"
    )
    tls_cert: Path | None = _setting(None, "TLS certificate (PEM); serve HTTPS with --tls-key")
    tls_key: Path | None = _setting(None, "TLS private key (PEM)")
    max_body_bytes: int = _setting(64 * MiB, "largest request body accepted, in bytes")
    max_statements: int = _setting(10_000, "most statements in one request")
    statement_seconds: float = _setting(30.0, "time limit of one statement, in seconds")
    max_result_rows: int = _setting(1_000_000, "most rows one statement may return")
    max_result_bytes: int = _setting(64 * MiB, "most bytes of values one statement may return")
    idle_seconds: float = _setting(300.0, "close a database after this long unused")
    max_open_databases: int = _setting(
        256, "most databases open at once; past it the least recently used close first"
    )
    evict_seconds: float = _setting(
        0.0,
        "remove a database closed this long from disk once the archive holds all of it; "
        "its next request restores it (0: never)",
    )
    max_query_many: int = _setting(10_000, "most databases one query-many call may read")
    transaction_seconds: float = _setting(
        10.0, "roll back an interactive transaction idle this long"
    )
    threads: int = _setting(16, "threads for reads, and as many for writes")
    archive: str = _setting(
        "", "s3://bucket/prefix, file:///path or a path; default DATA_DIR/archive; 'off': none"
    )
    archive_seconds: float = _setting(1.0, "seal and upload new log records this often")
    archive_segment_bytes: int = _setting(
        16 * MiB, "a segment holds at most about this many bytes of log"
    )
    archive_index_seconds: float = _setting(60.0, "rewrite each archive index at most this often")
    archive_compact_seconds: float = _setting(600.0, "merge one-round segments this often")
    snapshot_seconds: float = _setting(3600.0, "take a snapshot at least this often")
    snapshot_log_bytes: int = _setting(256 * MiB, "... and after this many bytes of log")
    retention_seconds: float = _setting(7 * 86400.0, "keep archived history this long")
    control_plane: str = _setting(
        "", "postgresql://... or sqlite:///path: join a cluster; default: one node on its own"
    )
    node_id: str = _setting(
        "", "this node's name in the cluster (default: kept in DATA_DIR/node-id)"
    )
    advertise: str = _setting("", "the URL other nodes reach this one at (default http://ADDRESS)")
    replication_factor: int = _setting(3, "copies of each database in a cluster (fewer nodes: all)")
    lease_seconds: float = _setting(
        1.0, "a node's lease; a dead node's leaders are replaced after it"
    )
    async_window_seconds: float = _setting(
        0.1, "an async database ships its records to the control plane this often"
    )
    durability: str = _setting("sync", "durability of databases created without one: sync or async")
    restore_missing: bool = _setting(
        False, "restore databases the archive has and the data dir lacks, before serving"
    )
    tokens: tuple[TokenSpec, ...] = field(default=(), metadata={"file_only": True})

    @property
    def host(self) -> str:
        return self.address.rpartition(":")[0].strip("[]") or "127.0.0.1"

    @property
    def port(self) -> int:
        return int(self.address.rpartition(":")[2])

    @property
    def url(self) -> str:
        """Where other nodes reach this one."""
        scheme = "https" if self.tls_cert else "http"
        return self.advertise.rstrip("/") or f"{scheme}://{self.address}"

    def __post_init__(self) -> None:
        host, _, port = self.address.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"address {self.address!r} is not HOST:PORT")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("TLS needs both tls_cert and tls_key")
        for name in (
            "max_body_bytes",
            "max_statements",
            "max_result_rows",
            "max_result_bytes",
            "archive_segment_bytes",
            "replication_factor",
            "snapshot_log_bytes",
            "max_open_databases",
            "max_query_many",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1")
        for name in (
            "statement_seconds",
            "idle_seconds",
            "transaction_seconds",
            "archive_seconds",
            "snapshot_seconds",
            "retention_seconds",
            "lease_seconds",
            "async_window_seconds",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be more than 0")
        for name in ("archive_index_seconds", "archive_compact_seconds"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be 0 (every round) or more")
        if self.durability not in ("sync", "async"):
            raise ConfigError(f"durability must be 'sync' or 'async', not {self.durability!r}")
        if self.node_id and not _NODE_ID.fullmatch(self.node_id):
            raise ConfigError(
                f"node_id {self.node_id!r}: use 1 to 64 letters, digits, '_', '-' or '.'"
            )
        if self.threads < 1:
            raise ConfigError("threads must be at least 1")
        if self.evict_seconds < 0:
            raise ConfigError("evict_seconds must be 0 (never) or more")
        if self.evict_seconds and self.archive.lower() == "off":
            raise ConfigError("evict_seconds needs an archive to restore from; archive is 'off'")
        if self.evict_seconds and self.control_plane:
            raise ConfigError(
                "evict_seconds is for a node alone: in a cluster every copy a node holds "
                "stays on its disk"
            )


def settable_fields() -> list[dataclasses.Field[Any]]:
    """The settings that flags and environment variables can set."""
    return [f for f in dataclasses.fields(Settings) if not f.metadata.get("file_only")]


def env_name(name: str) -> str:
    return "SHOAL_" + name.upper()


def _convert(f: dataclasses.Field[Any], raw: Any, source: str) -> Any:
    """`raw` (text from the environment, or a TOML value) as the field's type."""
    kind = str(f.type)
    try:
        if raw is None:
            return None
        if "Path" in kind:
            return Path(str(raw))
        if kind == "bool":
            if isinstance(raw, bool):
                return raw
            if str(raw).lower() in ("1", "true", "yes", "on"):
                return True
            if str(raw).lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if kind.startswith("int"):
            if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
                raise ValueError(raw)
            return int(raw)
        if kind.startswith("float"):
            if isinstance(raw, bool):
                raise ValueError(raw)
            return float(raw)
        if not isinstance(raw, str):
            raise ValueError(raw)
        return raw
    except ValueError:
        expected = kind.split(" ")[0]
        raise ConfigError(f"{source}: {raw!r} is not a valid {expected}") from None


def _tokens_from_file(raw: Any, path: Path) -> tuple[TokenSpec, ...]:
    if not isinstance(raw, list):
        raise ConfigError(f"{path}: 'tokens' must be an array of tables ([[tokens]])")
    specs = []
    for entry in raw:
        if not isinstance(entry, dict) or not {"name", "hash"} <= entry.keys():
            raise ConfigError(f"{path}: every [[tokens]] needs 'name' and 'hash'")
        unknown = entry.keys() - {"name", "hash", "scope", "databases"}
        if unknown:
            raise ConfigError(f"{path}: unknown key(s) in [[tokens]]: {', '.join(sorted(unknown))}")
        databases = entry.get("databases", ["*"])
        if isinstance(databases, str):
            databases = [databases]
        specs.append(
            TokenSpec(
                str(entry["name"]),
                str(entry["hash"]),
                str(entry.get("scope", "read")),
                tuple(str(d) for d in databases),
            )
        )
    return tuple(specs)


def load_settings(
    config: Path | None = None,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> Settings:
    """Settings from defaults, the TOML file, the environment, then flags (None = unset)."""
    values: dict[str, Any] = {}
    by_name = {f.name: f for f in dataclasses.fields(Settings)}
    if config is not None:
        try:
            document = tomllib.loads(config.read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read {config}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{config}: {exc}") from None
        unknown = document.keys() - by_name.keys()
        if unknown:
            raise ConfigError(f"{config}: unknown setting(s): {', '.join(sorted(unknown))}")
        for key, raw in document.items():
            if key == "tokens":
                values[key] = _tokens_from_file(raw, config)
            else:
                values[key] = _convert(by_name[key], raw, f"{config}: {key}")
    for f in settable_fields():
        name = env_name(f.name)
        if env and env.get(name, "") != "":
            values[f.name] = _convert(f, env[name], name)
        if flags and flags.get(f.name) is not None:
            values[f.name] = _convert(f, flags[f.name], "--" + f.name.replace("_", "-"))
    return Settings(**values)
