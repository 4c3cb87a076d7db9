"""Rendezvous placement: stable across processes, balanced, and a member change moves
only the databases it must."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import pytest

from shoal.cluster.placement import rank, replicas

NODES = ["n1", "n2", "n3", "n4", "n5"]
NAMES = [f"tenant-{i}" for i in range(5000)]


def test_the_same_in_every_process() -> None:
    here = [replicas(name, NODES) for name in NAMES[:50]]
    code = (
        "from shoal.cluster.placement import replicas; "
        f"print([replicas(f'tenant-{{i}}', {NODES!r}) for i in range(50)])"
    )
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert other.stdout.strip() == repr(here)


def test_factor_and_order() -> None:
    assert replicas("db", NODES, 3) == rank("db", NODES)[:3]
    assert len(set(replicas("db", NODES, 3))) == 3
    assert sorted(replicas("db", ["a", "b"], 3)) == ["a", "b"]  # fewer nodes than the factor
    assert replicas("db", [], 3) == []
    assert rank("db", ["a", "a", "b"]) == rank("db", ["b", "a"])  # a set, in any order
    with pytest.raises(ValueError, match="at least 1"):
        replicas("db", NODES, 0)


def test_leaders_are_balanced() -> None:
    leaders = Counter(replicas(name, NODES, 1)[0] for name in NAMES)
    expected = len(NAMES) / len(NODES)
    assert all(abs(count - expected) < 0.1 * expected for count in leaders.values()), leaders


def test_a_node_leaving_moves_only_what_it_held() -> None:
    before = {name: replicas(name, NODES) for name in NAMES}
    remaining = [n for n in NODES if n != "n3"]
    for name in NAMES:
        after = replicas(name, remaining)
        if "n3" not in before[name]:
            assert after == before[name]
        else:
            kept = [n for n in before[name] if n != "n3"]
            assert after[:2] == kept and after[2] not in kept


def test_a_node_joining_takes_about_its_share() -> None:
    before = {name: set(replicas(name, NODES)) for name in NAMES}
    grown = [*NODES, "n6"]
    moved = 0
    for name in NAMES:
        after = set(replicas(name, grown))
        if after != before[name]:
            assert "n6" in after and len(after - before[name]) == 1
            moved += 1
    assert 0.4 < moved / len(NAMES) < 0.6  # 3 of 6 slots: about half gain n6
