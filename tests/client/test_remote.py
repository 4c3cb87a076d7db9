"""The remote connection's parts that need no node (the rest: tests/system/)."""

from __future__ import annotations

import pytest

from shoal.client import remote
from shoal.errors import NotSupportedError


def test_python_functions_are_refused_for_the_node_runs_the_sql() -> None:
    conn = remote.Connection("http://127.0.0.1:9/app")
    with pytest.raises(NotSupportedError, match="register it on a file or an embedded replica"):
        conn.create_function("shout", 1, str.upper)
    with pytest.raises(NotSupportedError, match="cannot register total"):
        conn.create_aggregate("total", 1, None)
    conn.close()
