"""`/metrics` in Prometheus's text format: requests by route, status and duration.

Requests are labelled by route template (`/v1/databases/{name}/query`), never by
the raw path, so thousands of tenant databases do not make thousands of series.
"""

from __future__ import annotations

import bisect
import time
from collections import Counter, defaultdict

from shoal.node.archiving import ArchiveStatus
from shoal.server.port import ServedNode

__all__ = ["Metrics"]

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """Counters of requests by method, route and status, and their durations."""

    def __init__(self) -> None:
        self.requests: Counter[tuple[str, str, int]] = Counter()
        self.seconds: defaultdict[tuple[str, str], float] = defaultdict(float)
        self.buckets: Counter[tuple[str, str, float]] = Counter()

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Counts one request; its duration goes to the one bucket it falls in (the
        cumulative counts Prometheus wants are summed when rendering)."""
        self.requests[method, route, status] += 1
        self.seconds[method, route] += seconds
        index = bisect.bisect_left(BUCKETS, seconds)
        if index < len(BUCKETS):
            self.buckets[method, route, BUCKETS[index]] += 1

    def render(self, node: ServedNode, open_transactions: int) -> str:
        lines = [
            "# HELP shoal_http_requests_total HTTP requests answered, by route and status.",
            "# TYPE shoal_http_requests_total counter",
        ]
        for (method, route, status), count in sorted(self.requests.items()):
            lines.append(
                f'shoal_http_requests_total{{method="{method}",route="{route}",'
                f'status="{status}"}} {count}'
            )
        lines += [
            "# HELP shoal_http_request_duration_seconds Time to answer HTTP requests.",
            "# TYPE shoal_http_request_duration_seconds histogram",
        ]
        totals: Counter[tuple[str, str]] = Counter()
        for (method, route, _), count in self.requests.items():
            totals[method, route] += count
        for method, route in sorted(totals):
            labels = f'method="{method}",route="{route}"'
            count = 0
            for bound in BUCKETS:
                count += self.buckets[method, route, bound]
                lines.append(
                    f'shoal_http_request_duration_seconds_bucket{{{labels},le="{bound}"}} {count}'
                )
            lines.append(
                f'shoal_http_request_duration_seconds_bucket{{{labels},le="+Inf"}} '
                f"{totals[method, route]}"
            )
            lines.append(
                f"shoal_http_request_duration_seconds_sum{{{labels}}} "
                f"{self.seconds[method, route]:.6f}"
            )
            lines.append(
                f"shoal_http_request_duration_seconds_count{{{labels}}} {totals[method, route]}"
            )
        lines += _gauge("shoal_databases_open", "Databases open on this node.", len(node.names()))
        lines += _gauge(
            "shoal_transactions_open", "Interactive transactions open.", open_transactions
        )
        lines += _gauge("shoal_ready", "1 when the node serves requests.", int(node.ready))
        lines += _gauge("shoal_uptime_seconds", "Seconds since start.", time.time() - node.started)
        lines += [
            "# HELP shoal_database_version Version of each open database.",
            "# TYPE shoal_database_version gauge",
        ]
        for name, version in node.versions().items():
            lines.append(f'shoal_database_version{{database="{name}"}} {version}')
        if node.archive_url is not None:
            lines += _archive_lines(node.archive_status())
        if node.cluster_view() is not None:
            lines += _replica_lines(node.reseeds())
        return "\n".join(lines) + "\n"


def _archive_lines(archived: dict[str, ArchiveStatus]) -> list[str]:
    """Per database archived: versions not yet archived, failures in a row, uploads."""
    return _per_database(
        [
            ("shoal_archive_lag_versions", "gauge", "Versions committed and not yet archived."),
            (
                "shoal_archive_failures",
                "gauge",
                "Archive rounds failed in a row (store unreachable).",
            ),
            ("shoal_archive_uploads_total", "counter", "Objects uploaded to the archive."),
        ],
        [(name, (a.lag, a.failures, a.uploads)) for name, a in archived.items()],
    )


def _replica_lines(reseeds: dict[str, tuple[int, int]]) -> list[str]:
    """Per copy held in a cluster: re-seeds, and re-seeds in a row without progress."""
    return _per_database(
        [
            ("shoal_reseeds_total", "counter", "Copies replaced by a snapshot (a barrier, a gap)."),
            (
                "shoal_reseeds_in_a_row",
                "gauge",
                "Re-seeds since this copy last applied a record or reached the head.",
            ),
        ],
        list(reseeds.items()),
    )


def _per_database(
    series: list[tuple[str, str, str]], values: list[tuple[str, tuple[int, ...]]]
) -> list[str]:
    """The lines of each of `series` (name, type, help), a sample per database."""
    lines = []
    for position, (metric, kind, help_text) in enumerate(series):
        lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} {kind}"]
        lines += [f'{metric}{{database="{name}"}} {row[position]}' for name, row in values]
    return lines


def _gauge(name: str, help_text: str, value: float) -> list[str]:
    return [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name} {value:g}"]
