"""Running a node: what `shoal serve` sets up before it serves."""

from __future__ import annotations

import resource

from shoal.server.serve import open_files_limit


def test_a_node_may_open_as_many_files_as_the_administrator_allows() -> None:
    """A node in a cluster keeps every copy it holds open: the soft limit (often
    1,024) would stop it long before the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lowered = min(512, soft)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowered, hard))
    try:
        raised = open_files_limit()
        expected = lowered if hard == resource.RLIM_INFINITY else hard
        assert raised == expected == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
