"""A writer that goes on writing through failovers, restarts and outages, and keeps a
record of every answer: what a test or benchmark then checks the database against."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from tests.harness.net import wait_until


@dataclass(frozen=True)
class Ack:
    """A write answered 200: its row, the database version it made, the node that
    answered (Shoal-Node), and when (time.monotonic()) its request went and its answer
    came back."""

    row: int
    version: int
    node: str
    sent: float
    at: float


class Writer:
    """Inserts rows `first`, `first` + 1, ... into `database` with `sql` (its one parameter
    is the row) from `threads` threads, through `urls` in turn, one request at a time per
    thread, until stopped. `urls` may be replaced while it runs.

    Retried (on the next URL, after `backoff` seconds): a 503 marked retryable, and a
    connection refused (httpx.ConnectError: nothing was sent). Every row acknowledged
    (200) is kept in `acks`; anything else (another status, a connection cut mid-request,
    a timeout: the write may or may not have happened) is one entry of `failures`, and
    the writer goes on with the next row. `errors` counts both by kind.
    """

    def __init__(
        self,
        urls: Sequence[str],
        database: str,
        sql: str = "INSERT INTO t(id) VALUES (?)",
        *,
        threads: int = 1,
        timeout: float = 30.0,
        backoff: float = 0.05,
        first: int = 1,
    ) -> None:
        self.urls = list(urls)
        self.database = database
        self.sql = sql
        self.timeout = timeout
        self.backoff = backoff
        self.first = first
        self.acks: list[Ack] = []
        self.failures: list[str] = []
        self.failed_rows: list[int] = []  # rows whose outcome is unknown or refused
        self.failed_at: list[float] = []  # time.monotonic() of each failure
        self.errors: Counter[str] = Counter()  # "503 NotLeader", "ConnectError"...: how many
        self.samples: dict[str, str] = {}  # the first message of each kind of error
        self.retries = 0
        self.retry_messages: list[str] = []  # every 503, the first refused connections
        self.attempts = 0  # requests sent (or tried), in all
        self.slowest = 0.0  # seconds from a row's first try to its acknowledgement
        self.served_by: Counter[str] = Counter()  # Shoal-Node of acknowledged writes
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._threads = [
            threading.Thread(
                target=self._run, args=(index, threads), name=f"writer {database}", daemon=True
            )
            for index in range(threads)
        ]

    def __enter__(self) -> Writer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 60.0) -> None:
        """Stops after the requests in flight; a row still being retried is dropped."""
        self._stopping.set()
        for thread in self._threads:
            thread.join(timeout)
            if thread.is_alive():
                raise TimeoutError(f"the writer of {self.database} did not stop in {timeout} s")

    @property
    def acknowledged(self) -> list[int]:
        """The rows acknowledged so far."""
        return [ack.row for ack in self.acks]

    def wait_for(self, more: int, timeout: float = 30.0) -> None:
        """Waits until `more` rows past those acknowledged now are acknowledged."""
        target = len(self.acks) + more
        wait_until(
            lambda: len(self.acks) >= target or not any(t.is_alive() for t in self._threads),
            timeout,
            f"{more} more acknowledged writes to {self.database} "
            f"(failures so far: {self.failures[-3:]})",
        )
        assert len(self.acks) >= target, "the writer stopped"

    def wait_for_ack(
        self, condition: Callable[[Ack], bool], after: int, timeout: float, what: str
    ) -> Ack:
        """Waits for the first acknowledgement from index `after` on that meets
        `condition`, and returns it."""
        found: list[Ack] = []

        def arrived() -> bool:
            found[:] = [ack for ack in self.acks[after:] if condition(ack)][:1]
            return bool(found)

        wait_until(arrived, timeout, what)
        return found[0]

    def _error(self, kind: str, message: str) -> None:
        self.errors[kind] += 1
        self.samples.setdefault(kind, message[:300])

    def _fail(self, row: int, kind: str, message: str) -> None:
        with self._lock:
            self._error(kind, message)
            self.failed_rows.append(row)
            self.failed_at.append(time.monotonic())
            self.failures.append(message)

    def _retry(self, kind: str, message: str) -> None:
        with self._lock:
            self._error(kind, message)
            self.retries += 1
            if kind != "ConnectError" or self.errors[kind] <= 10:
                self.retry_messages.append(message)
        self._stopping.wait(self.backoff)

    def _acknowledge(self, ack: Ack, first_try: float) -> None:
        with self._lock:
            self.acks.append(ack)
            self.slowest = max(self.slowest, ack.at - first_try)
            self.served_by[ack.node] += 1

    def _run(self, index: int, threads: int) -> None:
        """Thread `index` of `threads` writes every `threads`-th row from `first` + `index`."""
        # A new connection per request: a kept-alive connection that the server closes
        # as it stops would fail a request that was never received, ambiguously.
        limits = httpx.Limits(max_keepalive_connections=0)
        turn = index
        with httpx.Client(timeout=self.timeout, limits=limits) as client:
            row = self.first + index - threads
            while not self._stopping.is_set():
                row += threads
                first_try = time.monotonic()
                while not self._stopping.is_set():
                    urls = self.urls
                    url = urls[turn % len(urls)]
                    turn += 1
                    where = f"row {row} via {url}"
                    with self._lock:
                        self.attempts += 1
                    sent = time.monotonic()
                    try:
                        response = client.post(
                            f"{url}/v1/databases/{self.database}/execute",
                            json={"sql": self.sql, "params": [row]},
                        )
                    except httpx.ConnectError:
                        self._retry("ConnectError", f"{where}: connection refused")
                        continue
                    except httpx.HTTPError as exc:
                        kind = type(exc).__name__
                        self._fail(row, kind, f"{where}: {kind}: {exc}")
                        break
                    node = response.headers.get("Shoal-Node", "?")
                    if response.status_code == 200:
                        version = int(response.json()["version"])
                        self._acknowledge(
                            Ack(row, version, node, sent, time.monotonic()), first_try
                        )
                        break
                    error = _error_of(response)
                    kind = f"{response.status_code} {error.get('type')}"
                    if response.status_code == 503 and error.get("retryable") is True:
                        took = time.monotonic() - sent
                        self._retry(
                            kind, f"{where} (node {node}, {took:.2f} s): {response.text[:300]}"
                        )
                        continue
                    self._fail(row, kind, f"{where}: {response.status_code} {response.text[:500]}")
                    break


def _error_of(response: httpx.Response) -> dict[str, Any]:
    """The `error` object of a shoal error response ({} if it has none)."""
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        return {}
    return error if isinstance(error, dict) else {}
