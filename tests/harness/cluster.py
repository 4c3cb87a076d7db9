"""Clusters: `shoal serve` nodes sharing one PostgreSQL control plane, and how to look
at them (members, leaders, copies) and fail them (kill, stop, pause)."""

from __future__ import annotations

import signal
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from tests.harness.net import free_port, free_ports, wait_until
from tests.harness.nodes import Node

CopyState = tuple[int, str]
"""A copy of a database as its node reports it: (version, checksum)."""


class Cluster:
    """Nodes n1..nN of one cluster (`shoal serve --control-plane DSN --node-id nI`),
    each with its data directory `directory / ID` and `env` on top of this process's
    environment, and how to look at them.

    A node counts as live while its process runs and it is not paused (SIGSTOP):
    the helpers below only ask live nodes, and only accept a live leader.
    """

    def __init__(
        self,
        directory: Path,
        dsn: str,
        size: int = 3,
        args: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.dsn = dsn
        self.args = list(args)
        self.env = env or {}
        self.nodes: dict[str, Node] = {}
        self.paused: set[str] = set()
        self.http = httpx.Client(timeout=10.0)
        for number, port in enumerate(free_ports(size), 1):
            self.add(f"n{number}", port=port)

    # -- membership -------------------------------------------------------------------

    def add(self, node_id: str, *, port: int | None = None) -> Node:
        """A node of this cluster, not started yet."""
        args = ["--control-plane", self.dsn, "--node-id", node_id, *self.args]
        node = Node(self.directory / node_id, port or free_port(), args, self.env)
        self.nodes[node_id] = node
        return node

    def start(self, *node_ids: str) -> None:
        """Starts these nodes (all, if none named) together; waits for each /readyz."""
        nodes = [self.nodes[i] for i in node_ids or self.nodes]
        with ThreadPoolExecutor(len(nodes)) as pool:
            for started in [pool.submit(node.start) for node in nodes]:
                started.result()

    def close(self) -> None:
        """Stops every node still running (a paused one is resumed first)."""
        for node_id in list(self.paused):
            self.resume(node_id)
        with ThreadPoolExecutor(max(1, len(self.nodes))) as pool:
            list(pool.map(lambda node: node.stop(), self.nodes.values()))
        self.http.close()

    def forget(self, node_id: str) -> None:
        """Takes a node that is not running out of this cluster (a lost machine)."""
        assert not self.running(node_id), f"{node_id} still runs"
        del self.nodes[node_id]
        self.paused.discard(node_id)

    def __getitem__(self, node_id: str) -> Node:
        return self.nodes[node_id]

    def running(self, node_id: str) -> bool:
        process = self.nodes[node_id].process
        return process is not None and process.poll() is None

    @property
    def live(self) -> list[str]:
        """The ids of the nodes that run and are not paused."""
        return [i for i in self.nodes if self.running(i) and i not in self.paused]

    def urls(self) -> list[str]:
        return [self.nodes[i].url for i in self.live]

    def kill(self, node_id: str) -> None:
        """SIGKILL."""
        self.nodes[node_id].kill()

    def stop(self, node_id: str) -> int | None:
        """SIGTERM, and waits for the node to exit (it hands its leases over first)."""
        return self.nodes[node_id].stop()

    def pause(self, node_id: str) -> None:
        """SIGSTOP: the process stays, frozen, its sockets open."""
        self.nodes[node_id].signal(signal.SIGSTOP)
        self.paused.add(node_id)

    def resume(self, node_id: str) -> None:
        """SIGCONT."""
        self.nodes[node_id].signal(signal.SIGCONT)
        self.paused.discard(node_id)

    def state(self, node_id: str) -> dict[str, Any]:
        """`GET /v1/cluster` as node `node_id` sees it."""
        response = self.http.get(f"{self.nodes[node_id].url}/v1/cluster")
        response.raise_for_status()
        state: dict[str, Any] = response.json()
        return state

    def wait_members(self, timeout: float = 30.0) -> None:
        """Waits until every live node lists exactly the live nodes as members, none
        of them leaving (a killed node drops out when its heartbeat expires)."""
        expected = sorted(self.live)

        def agreed() -> bool:
            for node_id in expected:
                try:
                    nodes = self.state(node_id)["nodes"]
                except httpx.HTTPError:
                    return False
                if sorted(n["id"] for n in nodes) != expected or any(n["leaving"] for n in nodes):
                    return False
            return True

        wait_until(agreed, timeout, f"nodes {expected} to see each other, and only each other")

    # -- leaders and copies ----------------------------------------------------------

    def leader_seen_by(self, node_id: str, database: str) -> str | None:
        """The node `node_id`'s `/nodes?db=` marks as the leader of `database`, if any."""
        try:
            response = self.http.get(f"{self.nodes[node_id].url}/nodes", params={"db": database})
        except httpx.HTTPError:
            return None
        if response.status_code != 200:
            return None
        marked = [i for i, entry in response.json().items() if entry.get("leader")]
        return marked[0] if len(marked) == 1 else None

    def leader(self, database: str, timeout: float = 30.0) -> str:
        """The id of the live node that every live node names as `database`'s leader,
        waiting for them to agree on one."""
        found: list[str] = []
        seen: dict[str, str | None] = {}

        def agreed() -> bool:
            seen.clear()
            seen.update({i: self.leader_seen_by(i, database) for i in self.live})
            if len(set(seen.values())) == 1 and (leader := seen[self.live[0]]) in self.live:
                found[:] = [leader]
                return True
            return False

        try:
            wait_until(agreed, timeout, f"the live nodes to agree on a live leader of {database}")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; last seen (node: its leader): {seen}") from None
        return found[0]

    def _own_copy(self, node_id: str, database: str, checksum: bool) -> dict[str, Any] | None:
        """What node `node_id` says of its own copy of `database`, or None if it holds
        none (it forwards the request then, so another node answers)."""
        params = {"checksum": 1} if checksum else {}
        try:
            response = self.http.get(
                f"{self.nodes[node_id].url}/v1/databases/{database}", params=params
            )
        except httpx.HTTPError:
            return None
        if response.status_code != 200 or response.headers.get("Shoal-Node") != node_id:
            return None
        info: dict[str, Any] = response.json()
        return info

    def copy(self, node_id: str, database: str) -> CopyState | None:
        """Node `node_id`'s own copy of `database` as (version, checksum), or None."""
        info = self._own_copy(node_id, database, checksum=True)
        return None if info is None else (int(info["version"]), str(info["checksum"]))

    def wait_caught_up(
        self, node_id: str, database: str, version: int, timeout: float = 20.0
    ) -> None:
        """Waits until node `node_id` holds a copy of `database` at `version` or later
        (asking for the version alone: a checksum reads the whole copy)."""

        def caught_up() -> bool:
            info = self._own_copy(node_id, database, checksum=False)
            return info is not None and int(info["version"]) >= version

        wait_until(caught_up, timeout, f"{node_id} to hold a copy of {database} at {version}")

    def copies(self, database: str) -> dict[str, CopyState]:
        """Every live node's own copy of `database`, by node id."""
        found = {i: self.copy(i, database) for i in self.live}
        return {i: state for i, state in found.items() if state is not None}

    def wait_converged(
        self, database: str, copies: int | None = None, timeout: float = 30.0
    ) -> CopyState:
        """Waits until the leader's copy is at the log's head and at least `copies`
        live nodes (default: every live node, at most 3) hold a copy with the leader's
        version and checksum, every other copy too; returns that (version, checksum)."""
        wanted = copies if copies is not None else min(3, len(self.live))
        last: list[Any] = ["nothing yet"]

        def converged() -> bool:
            leader = self.leader_seen_by(self.live[0], database) if self.live else None
            if leader not in self.live:
                last[0] = f"no live leader ({leader})"
                return False
            assert leader is not None
            states = self.copies(database)
            try:
                databases = self.state(leader)["databases"]
            except httpx.HTTPError as exc:
                last[0] = f"leader {leader} does not answer: {exc}"
                return False
            head = next((d["head"] for d in databases if d["name"] == database), None)
            last[0] = f"leader {leader}, log head {head}, copies {states}"
            reference = states.get(leader)
            return (
                reference is not None
                and reference[0] == head
                and len(states) >= wanted
                and all(state == reference for state in states.values())
            )

        try:
            wait_until(converged, timeout, f"the copies of {database} to converge")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; last seen: {last[0]}") from None
        leader = self.leader_seen_by(self.live[0], database)
        assert leader is not None
        states = self.copies(database)
        return states[leader]


@contextmanager
def shoal_cluster(
    directory: Path, dsn: str, size: int = 3, *args: str, env: dict[str, str] | None = None
) -> Iterator[Cluster]:
    """`size` running nodes n1..nN with the control plane `dsn` (and `args` and `env` for
    each), once every one of them lists all of them as members; all stopped on exit."""
    cluster = Cluster(directory, dsn, size, args, env)
    try:
        cluster.start()
        cluster.wait_members()
        yield cluster
    finally:
        cluster.close()
