"""Placement by rendezvous hashing: which nodes hold a database, computed, not configured.

Every node scores every (node, database) pair with the same stable hash and ranks
the live nodes by score; a database's replicas are the first `factor` of that
ranking. Nothing is stored or agreed on: any node with the same member list
computes the same answer. When a node leaves, only the databases it held move
(each to the next node in its own ranking); when one joins, only the databases
that now rank it among their first `factor` move, about factor/N of them.

The hash is BLAKE2b, not Python's `hash()`, which differs between processes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

__all__ = ["rank", "replicas"]

DEFAULT_FACTOR = 3


def _score(node: str, database: str) -> int:
    name = node.encode()
    pair = len(name).to_bytes(4, "big") + name + database.encode()  # unambiguous
    return int.from_bytes(hashlib.blake2b(pair, digest_size=8).digest(), "big")


def rank(database: str, nodes: Iterable[str]) -> list[str]:
    """The nodes in `database`'s order of preference (ties broken by node id)."""
    return sorted(set(nodes), key=lambda node: (-_score(node, database), node))


def replicas(database: str, nodes: Iterable[str], factor: int = DEFAULT_FACTOR) -> list[str]:
    """The nodes that hold `database`, preferred first: `factor` of them, or every
    node when there are fewer."""
    if factor < 1:
        raise ValueError(f"a replication factor is at least 1, not {factor}")
    return rank(database, nodes)[:factor]
