"""The control plane: per-database logs with compare-and-set
append, and a key-value table with compare-and-set and expiry, behind one
interface (base.py). Chosen by URL, so that a node takes one setting:

    "" or sqlite                  DATA_DIR/control.db (the default: one node)
    sqlite:///absolute/path.db    that SQLite file
    postgresql://user@host/name   PostgreSQL (also postgres://); needs psycopg:
                                  pip install 'shoal[postgres]'
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

from shoal.controlplane.base import (
    ABSENT,
    AppendConflict,
    Changes,
    CommitUnknown,
    ControlPlane,
    ControlPlaneError,
    ControlPlaneUnavailable,
    Entry,
    KeyConflict,
    LogWatch,
)
from shoal.controlplane.sqlite import SQLiteControlPlane
from shoal.errors import InvalidRequest

__all__ = [
    "ABSENT",
    "AppendConflict",
    "Changes",
    "CommitUnknown",
    "ControlPlane",
    "ControlPlaneError",
    "ControlPlaneUnavailable",
    "Entry",
    "KeyConflict",
    "LogWatch",
    "open_control_plane",
]

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_FORMS = (
    "a control plane is '' or sqlite (DATA_DIR/control.db), sqlite:///absolute/path.db "
    "or postgresql://user@host:port/database"
)


def open_control_plane(url: str, data_dir: Path) -> ControlPlane:
    """The control plane that `url` names; InvalidRequest (with the accepted forms) if none."""
    if url.strip() in ("", "sqlite"):
        return SQLiteControlPlane(data_dir / "control.db")
    match = _SCHEME.match(url)
    scheme = match.group(1).lower() if match else ""
    if scheme == "sqlite":
        parts = urlsplit(url)
        path = unquote(parts.path)
        elsewhere = parts.netloc not in ("", "localhost") or parts.query or parts.fragment
        if elsewhere or path in ("", "/"):
            raise InvalidRequest(f"invalid SQLite control plane URL {url!r}: {_FORMS}")
        return SQLiteControlPlane(path)
    if scheme in ("postgresql", "postgres"):
        try:
            from shoal.controlplane.postgres import PostgresControlPlane
        except ImportError as exc:
            raise ControlPlaneError(
                f"a PostgreSQL control plane needs psycopg ({exc}); "
                "install it with: pip install 'shoal[postgres]'"
            ) from None
        return PostgresControlPlane(url)
    # Only the scheme is repeated: a URL may hold a password.
    named = f"scheme {scheme + '://'!r}" if scheme else "form"
    raise InvalidRequest(f"unknown control plane URL {named}: {_FORMS}")
