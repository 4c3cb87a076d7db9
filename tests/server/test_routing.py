"""Routing (cluster/routing.py decides, server/routing.py serves or forwards) against
a cluster whose view of the leases lags, as
every node's does by up to a view's period: the races that real clusters hit only
now and then (tests/system/test_cluster.py), played out step by step.

The cluster is a small fake with the real `Cluster.leader`; forwards go to an httpx
MockTransport that records them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import SimpleNamespace

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import Response

from shoal.cluster import routing
from shoal.cluster.coordinator import Cluster
from shoal.cluster.routing import Leader, Need
from shoal.cluster.view import Lease, Member, Spec, View
from shoal.errors import NotLeader, ReadOnly, VersionNotReached
from shoal.server import httputil
from shoal.server import routing as routing_module
from shoal.server.routing import EPOCH, HOPS, MAX_HOPS, dispatch

NODES = {n: Member(n, f"http://{n}.test") for n in ("n1", "n2", "n3")}


@dataclass
class FakeReplica:
    leading: bool = False


@dataclass
class FakeCluster:
    """What routing reads of a node's cluster: its id, replicas, view and client."""

    node_id: str
    view: View
    replicas: dict[str, FakeReplica]
    forwarded: list[httpx.Request] = field(default_factory=list)
    unreachable: set[str] = field(default_factory=set)
    leader = Cluster.leader  # the real waiting and choosing

    def __post_init__(self) -> None:
        self.http = httpx.AsyncClient(transport=httpx.MockTransport(self._answer))

    def _answer(self, request: httpx.Request) -> httpx.Response:
        if request.url.host.removesuffix(".test") in self.unreachable:
            raise httpx.ConnectError("refused", request=request)
        self.forwarded.append(request)
        served_by = request.url.host.removesuffix(".test")
        return httpx.Response(200, json={"ok": True}, headers={"Shoal-Node": served_by})

    def lease(self, holder: str, epoch: int) -> None:
        """The view now shows `app` leased to `holder` in `epoch`."""
        self.view = View(NODES, {"app": Lease("app", holder, epoch, 1)}, self.view.catalog)


def view(holder: str, epoch: int) -> View:
    return View(NODES, {"app": Lease("app", holder, epoch, 1)}, {"app": Spec("app", "sync")})


def request_to(cluster: FakeCluster, headers: dict[str, str] | None = None) -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]

    async def route(name: str, need: Need, at_least: int = 0) -> Leader | None:
        return await routing.route(cluster, name, need, at_least)  # type: ignore[arg-type]

    node = SimpleNamespace(route=route)
    app = SimpleNamespace(state=SimpleNamespace(node=node, peers=cluster.http))
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/databases/app/execute",
        "query_string": b"",
        "headers": raw,
        "app": app,
        httputil.NODE: node,  # as the application's front puts it
    }
    return Request(scope)


def run(
    cluster: FakeCluster,
    need: Need,
    serve_here: Callable[[], Awaitable[Response]],
    headers: dict[str, str] | None = None,
    later: Callable[[], None] | None = None,
) -> Response:
    """Dispatches one request; `later` changes the cluster 50 ms in (a view refresh)."""

    async def scenario() -> Response:
        task = asyncio.create_task(dispatch(request_to(cluster, headers), "app", need, serve_here))
        if later is not None:
            await asyncio.sleep(0.05)
            later()
        return await task

    return asyncio.run(scenario())


def served_here() -> Callable[[], Awaitable[Response]]:
    async def serve() -> Response:
        return Response("here", headers={"Shoal-Node": "self"})

    return serve


def test_a_write_forwarded_under_a_lease_newer_than_our_view_waits_here() -> None:
    """n1 handed the lease to n2 and forwarded a write there; n2's view still shows
    n1 leading. Sending it back to n1 would bounce it: n2 waits for its lease."""
    cluster = FakeCluster("n2", view("n1", 2), {"app": FakeReplica(leading=False)})

    def takes_lease() -> None:
        cluster.lease("n2", 3)
        cluster.replicas["app"].leading = True

    answer = run(
        cluster, Need(write=True), served_here(), {HOPS: "1", EPOCH: "3"}, later=takes_lease
    )
    assert answer.body == b"here"
    assert cluster.forwarded == []


def test_a_node_that_handed_its_lease_over_forwards_to_the_new_leader() -> None:
    """The write met the demoted copy (ReadOnly); the view still names this node:
    it waits for the view to show the new lease, then forwards there with its epoch."""
    cluster = FakeCluster("n1", view("n1", 2), {"app": FakeReplica(leading=True)})
    tries = []

    async def demoted() -> Response:
        tries.append(1)
        cluster.replicas["app"].leading = False
        raise ReadOnly("database 'app' is a follower here")

    answer = run(cluster, Need(write=True), demoted, later=lambda: cluster.lease("n2", 3))
    assert answer.headers["Shoal-Node"] == "n2"
    assert tries == [1]
    [forward] = cluster.forwarded
    assert forward.url.host == "n2.test"
    assert forward.headers[HOPS] == "1" and forward.headers[EPOCH] == "3"


def test_a_leader_refusing_writes_while_it_still_leads_is_retried_at_a_pace() -> None:
    """A leader whose append found the log ahead refuses writes (NotLeader) until it
    has rejoined the log, while it still holds the lease: the request is tried again
    every few milliseconds, not in a loop as fast as the node can run it."""
    cluster = FakeCluster("n1", view("n1", 2), {"app": FakeReplica(leading=True)})
    tries = []

    async def behind() -> Response:
        tries.append(1)
        await asyncio.sleep(0)  # as a real node's write pool would
        raise NotLeader("'app': the log is ahead of this leader; retry")

    async def scenario() -> None:
        task = asyncio.create_task(dispatch(request_to(cluster), "app", Need(write=True), behind))
        await asyncio.sleep(0.3)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(scenario())
    assert 2 <= len(tries) <= 100  # unpaced, this is thousands


def test_a_leader_that_cannot_be_reached_is_not_tried_again_until_a_new_lease() -> None:
    """A killed leader refuses connections: the request waits for the next lease."""
    cluster = FakeCluster("n3", view("n1", 2), {}, unreachable={"n1"})
    answer = run(cluster, Need(write=True), served_here(), later=lambda: cluster.lease("n2", 3))
    assert answer.headers["Shoal-Node"] == "n2"
    assert [r.url.host for r in cluster.forwarded] == ["n2.test"]


def test_a_follower_that_does_not_reach_min_version_asks_the_leader_once() -> None:
    cluster = FakeCluster("n2", view("n1", 2), {"app": FakeReplica(leading=False)})

    async def lagging() -> Response:
        raise VersionNotReached(10, 5, 0.1)

    answer = run(cluster, Need(write=False, min_version=10), lagging)
    assert answer.headers["Shoal-Node"] == "n1"
    [forward] = cluster.forwarded
    assert forward.headers[HOPS] == "1"


def test_the_leader_that_does_not_reach_min_version_says_so() -> None:
    """Forwarded to the leader, or asked there: no one else can have the version."""
    for node_id, headers in (("n1", {}), ("n1", {HOPS: "1", EPOCH: "2"})):
        cluster = FakeCluster(node_id, view("n1", 2), {"app": FakeReplica(leading=True)})

        async def lagging() -> Response:
            raise VersionNotReached(10, 5, 0.1)

        with pytest.raises(VersionNotReached):
            run(cluster, Need(write=False, min_version=10), lagging, headers)
        assert cluster.forwarded == []


def test_a_request_that_has_chased_the_lease_too_long_is_refused_retryably() -> None:
    cluster = FakeCluster("n2", view("n3", 4), {"app": FakeReplica(leading=False)})
    with pytest.raises(NotLeader) as refused:
        run(cluster, Need(write=True), served_here(), {HOPS: "3", EPOCH: "3"})
    assert refused.value.leader == "http://n3.test"
    assert cluster.forwarded == []


def test_no_leader_within_the_wait_is_a_retryable_not_leader(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("shoal.cluster.routing.LEADER_WAIT_SECONDS", 0.2)
    cluster = FakeCluster("n2", view("n1", 2), {"app": FakeReplica(leading=False)})
    cluster.view = View(NODES, {}, cluster.view.catalog)
    with pytest.raises(NotLeader):
        run(cluster, Need(write=True), served_here())


@pytest.mark.parametrize(
    ("need", "says"),
    [
        (Need(write=True), "cannot take writes now"),
        (Need(write=False, level="linearizable"), "cannot serve linearizable reads now"),
    ],
)
def test_a_lease_this_node_cannot_confirm_is_refused_saying_what_it_cannot_do(
    monkeypatch: pytest.MonkeyPatch, need: Need, says: str
) -> None:
    """The view names this node, but its copy does not lead (the control plane is
    out of reach): a read is not told that writes are refused."""
    monkeypatch.setattr("shoal.cluster.routing.LEADER_WAIT_SECONDS", 0.2)
    cluster = FakeCluster("n1", view("n1", 2), {"app": FakeReplica(leading=False)})
    with pytest.raises(NotLeader, match=says) as refused:
        run(cluster, need, served_here())
    assert "reads at level 'none' are served from any copy" in str(refused.value)
    assert cluster.forwarded == []


@pytest.mark.parametrize(("sent", "hops"), [(None, 0), ("2", 2), ("", MAX_HOPS), ("x", MAX_HOPS)])
def test_a_hop_count_that_is_not_a_number_counts_as_the_most(sent: str | None, hops: int) -> None:
    # A client's own Shoal-Hops is not trusted to send a request further.
    raw = [] if sent is None else [(HOPS.lower().encode(), sent.encode())]
    request = Request({"type": "http", "method": "POST", "path": "/", "headers": raw})
    assert routing_module._header_number(request, HOPS, MAX_HOPS) == hops
