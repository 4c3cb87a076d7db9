"""The capacity model of a shoal cluster (docs/capacity.md), checked by simulation.

What 1,000 nodes and 1,000,000 databases cost the control plane and the archive
while idle, and what moves when one node joins or leaves. The steady-state
figures are the model's formulas over the node's own constants (imported, so
they cannot drift from the code). What moves is measured: the real rendezvous
placement (`shoal.cluster.placement.rank`) runs over a random sample of database
names, before and after the change, and the sample's fraction, with its 95%
interval, is scaled to every database. The same formulas at three nodes are the
figures `bench/tenants.py` measures on this machine.

    python bench/capacity.py                       # 1,000 nodes, 1,000,000 databases
    python bench/capacity.py --nodes 3 --databases 2000
    python bench/capacity.py --sample 200000       # a tighter interval, slower
"""

from __future__ import annotations

import argparse
import math
import random
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import checkout  # noqa: F401 - first: this checkout's shoal, bench and tests on sys.path

# isort: split

from bench.common import progress_line, table

from shoal.cluster.coordinator import COPIES_SECONDS, SWEEP_SECONDS, VIEW_SECONDS
from shoal.cluster.placement import rank
from shoal.cluster.replica import Timing

FACTOR = 3


@dataclass(frozen=True)
class Idle:
    """An idle cluster's control-plane work per second, from the model."""

    renewals: float  # writes: each node's lease
    view_reads: float  # statements: each node's read of what changed
    view_rows: float  # rows those reads return: every node's renewals, to every node
    sweeps: float  # statements: each node's read of its logs' heads
    sweep_heads: float  # heads those reads look up

    @property
    def statements(self) -> float:
        return self.renewals + self.view_reads + self.sweeps


def idle(nodes: int, databases: int, timing: Timing) -> Idle:
    renewals = nodes / timing.renew_every
    reads = nodes / VIEW_SECONDS
    # Between two reads of one node, every node renews VIEW_SECONDS / renew_every times.
    rows_per_read = nodes * min(1.0, VIEW_SECONDS / timing.renew_every)
    copies_per_node = databases * min(FACTOR, nodes) / nodes
    return Idle(
        renewals=renewals,
        view_reads=reads,
        view_rows=reads * rows_per_read,
        sweeps=nodes / SWEEP_SECONDS,
        sweep_heads=nodes / SWEEP_SECONDS * copies_per_node,
    )


@dataclass(frozen=True)
class Moved:
    """What a change of membership moved in the sample."""

    joined: int  # copies placed on the node that joined
    crashed: int  # copies re-placed when a node crashed
    failed_over: int  # databases whose leader was the node that crashed


def simulate(nodes: int, sample: int, seed: int, say: Callable[[str], None]) -> Moved:
    """Placement before and after a node joins, and after one crashes, for
    `sample` random database names. A database's leader is taken to be the first
    of its placement (the first to claim it); a node that joins takes no live
    lease, so a join moves copies only."""
    rng = random.Random(seed)
    members = [f"node-{i:04d}" for i in range(nodes)]
    joining, crashing = "node-new", rng.choice(members)
    joined = crashed = failed_over = 0
    for done in range(sample):
        if done % 1000 == 0:
            say(f"placing sample databases: {done:,} of {sample:,}")
        name = f"tenant-{rng.getrandbits(64):016x}"
        ranked = rank(name, [*members, joining])
        before = [n for n in ranked if n != joining][:FACTOR]
        after_join = ranked[:FACTOR]
        after_crash = [n for n in ranked if n not in (joining, crashing)][:FACTOR]
        joined += len(set(after_join) - set(before))
        crashed += len(set(after_crash) - set(before))
        failed_over += before[0] == crashing
    say("")
    return Moved(joined, crashed, failed_over)


def scaled(count: int, sample: int, databases: int) -> str:
    """`count` of `sample` scaled to `databases`, with a 95% interval (normal
    approximation to the binomial; exact enough for a count of a few dozen)."""
    p = count / sample
    half = 1.96 * math.sqrt(max(p * (1 - p), 1 / sample) / sample)
    low, high = max(0.0, p - half) * databases, (p + half) * databases
    return f"{p * databases:,.0f} ({low:,.0f}-{high:,.0f})"


def report(args: argparse.Namespace) -> str:
    timing = Timing()
    say = progress_line(False)
    steady = idle(args.nodes, args.databases, timing)
    moved = simulate(args.nodes, args.sample, args.seed, say)
    copies_per_node = args.databases * min(FACTOR, args.nodes) / args.nodes
    rows = [
        ["node lease renewals (writes)", f"{steady.renewals:,.0f}/s"],
        ["view reads (statements)", f"{steady.view_reads:,.0f}/s"],
        ["  rows they return", f"{steady.view_rows:,.0f}/s"],
        ["head sweeps (statements)", f"{steady.sweeps:,.1f}/s"],
        ["  heads they look up", f"{steady.sweep_heads:,.0f}/s"],
        ["control-plane statements in all", f"{steady.statements:,.0f}/s"],
        [
            "copies' versions written",
            f"0/s (written when they change, at most every {COPIES_SECONDS:g} s)",
        ],
        ["archive requests", "0/s (a quiet database's round writes nothing)"],
    ]
    # A crashed node's copies go to nodes that held none of them: if there are any.
    crashed_share = copies_per_node if args.nodes - 1 >= FACTOR else 0
    churn = [
        [
            "a node joins: copies moved to it",
            f"{args.databases * FACTOR / (args.nodes + 1):,.0f}",
            scaled(moved.joined, args.sample, args.databases),
        ],
        ["  leases moved (a new node takes no live lease)", "0", "0"],
        [
            "a node crashes: copies re-placed",
            f"{crashed_share:,.0f}",
            scaled(moved.crashed, args.sample, args.databases),
        ],
        [
            "  leases that fail over",
            f"{args.databases / args.nodes:,.0f}",
            scaled(moved.failed_over, args.sample, args.databases),
        ],
    ]
    lines = [
        f"A cluster of {args.nodes:,} nodes and {args.databases:,} databases "
        f"(factor {FACTOR}, lease {timing.lease_seconds:g} s renewed every "
        f"{timing.renew_every:g} s, view read every {VIEW_SECONDS:g} s, heads swept "
        f"every {SWEEP_SECONDS:g} s), idle:",
        *table(["", "per second"], rows),
        "",
        f"One change of membership: the model, and placement simulated on {args.sample:,} "
        "random databases, scaled:",
        *table(["", "model", "simulated (95% interval)"], churn),
        "",
        "Each moved copy catches up once: by replaying its log from the control plane if",
        "that still holds it all, else from a snapshot: the archive's (its index and newest",
        "snapshot, two GETs for a quiet database, plus one GET per segment since) or the",
        "leader's. Each lease that fails over is one claim: a read of the old holder's key",
        "and a compare-and-set, two statements.",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000, help="nodes (1000)")
    parser.add_argument("--databases", type=int, default=1_000_000, help="databases (1000000)")
    parser.add_argument("--sample", type=int, default=50_000, help="databases placed (50000)")
    parser.add_argument("--seed", type=int, default=17, help="the sample's random seed")
    args = parser.parse_args(argv)
    if args.nodes < 2 or args.databases < 1 or args.sample < 100:
        parser.error("--nodes at least 2, --databases at least 1, --sample at least 100")
    print(report(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
