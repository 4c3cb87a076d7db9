"""What the benchmarks share: their error and progress line, wrk's error counting and
rate, and tables.

Each benchmark is a script (`python bench/NAME.py`) that imports `checkout` (which puts
the checkout's root on `sys.path`) before it imports this module as `bench.common`.
"""

from __future__ import annotations

import os
import platform
import re
import sys
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any

__all__ = [
    "WRK_COUNTING",
    "BenchError",
    "CpuMeter",
    "Step",
    "children",
    "environment",
    "failed",
    "postgres_facts",
    "progress_line",
    "ratio",
    "stat_fields",
    "table",
    "threaded_rate",
    "wrk_rate",
]


class BenchError(RuntimeError):
    """A load generator failed, a check failed or a service did not recover: no figure."""


def progress_line(quiet: bool) -> Callable[[str], None]:
    """How a benchmark says what it is doing: one line on stderr, each message written
    over the last ("" clears it); silent when `quiet` or when stderr is not a terminal."""
    shown = not quiet and sys.stderr.isatty()

    def say(message: str) -> None:
        if shown:
            print(f"\r\033[K{message}", end="", file=sys.stderr, flush=True)

    return say


def environment() -> dict[str, Any]:
    """The machine and the software a figure was measured on, for a table's header."""
    import apsw

    import shoal

    return {
        "cpus": os.cpu_count(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "sqlite": apsw.sqlite_lib_version(),
        "platform": platform.platform(),
        "shoal": shoal.__version__,
        "shoal_path": str(Path(shoal.__file__).parent),
    }


def failed(error: Exception, say: Callable[[str], None]) -> int:
    """Clears the progress line and says why the run gave no figures; the exit status."""
    say("")
    print(f"benchmark failed: {error}", file=sys.stderr)
    return 1


# The Lua a wrk script ends with: every thread counts its non-2xx answers, and the
# total is printed at the end for `wrk_rate` to find. (Doubled braces: the scripts
# are filled in with str.format.)
WRK_COUNTING = """\
local threads, next_id = {{}}, 0
failures = 0

function setup(thread)
  next_id = next_id + 1
  thread:set("id", next_id)
  table.insert(threads, thread)
end

function response(status, headers, body)
  if status < 200 or status > 299 then
    failures = failures + 1
  end
end

function done(summary, latency, requests)
  local total = 0
  for _, thread in ipairs(threads) do
    total = total + thread:get("failures")
  end
  io.write(string.format("shoal-bench non-2xx: %d\\n", total))
end
"""


def wrk_rate(stdout: str, stderr: str, returncode: int) -> float:
    """Requests/sec from the output of wrk running a script that ends with
    `WRK_COUNTING`; BenchError on any error it reports (exit status, socket errors,
    non-2xx answers)."""
    rate = re.search(r"Requests/sec:\s+([\d.]+)", stdout)
    failures = re.search(r"shoal-bench non-2xx: (\d+)", stdout)
    if returncode != 0 or rate is None or failures is None:
        raise BenchError(f"wrk failed (exit {returncode}):\n{stdout}{stderr}")
    if int(failures.group(1)) or "Socket errors" in stdout or "Non-2xx" in stdout:
        raise BenchError(f"wrk saw errors ({failures.group(1)} non-2xx responses):\n{stdout}")
    return float(rate.group(1))


def ratio(top: float | None, bottom: float | None) -> str:
    """`top / bottom` as "0.42x", or "-" when either was not measured."""
    return f"{top / bottom:.2f}x" if top and bottom else "-"


def table(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """Columns as wide as their widest cell: the first left-aligned, numbers with commas."""
    cells = [[f"{c:,.0f}" if isinstance(c, float | int) else c for c in r] for r in rows]
    cells.insert(0, list(head))
    widths = [max(len(str(row[i])) for row in cells) for i in range(len(head))]
    lines = [
        "  ".join(
            str(c).ljust(w) if i == 0 else str(c).rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in cells
    ]
    return [lines[0], "-" * len(lines[0]), *lines[1:]]


Step = Callable[[], int]
"""Does a few operations between two reads of the clock; returns how many."""


def threaded_rate(
    make: Callable[[int], tuple[Step, Callable[[], None]]], clients: int, seconds: float
) -> float:
    """Operations/s from `clients` threads, thread i running the step of `make(i)` (which
    also returns how to close what the step uses), all set up before the clock starts.
    BenchError if a thread failed."""
    counts, ready, go = [0] * clients, threading.Barrier(clients + 1), threading.Event()
    deadline, errors = [0.0], list[BaseException]()

    def work(index: int) -> None:
        try:
            step, close = make(index)
        except BaseException as exc:
            errors.append(exc)
            ready.abort()
            return
        try:
            ready.wait()
            go.wait()
            while time.perf_counter() < deadline[0]:
                counts[index] += step()
        except threading.BrokenBarrierError:
            pass
        except BaseException as exc:
            errors.append(exc)
        finally:
            close()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    with suppress(threading.BrokenBarrierError):
        ready.wait()
    start = time.perf_counter()
    deadline[0] = start + seconds
    go.set()
    for thread in threads:
        thread.join()
    if errors:
        raise BenchError(f"a benchmark thread failed: {errors[0]!r}")
    return sum(counts) / (time.perf_counter() - start)


def postgres_facts(dsn: str) -> dict[str, str]:
    """The PostgreSQL server's version and durability settings, for a report's header."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        names = ("server_version", "fsync", "synchronous_commit", "wal_sync_method")
        query = "SELECT name, setting FROM pg_settings WHERE name = ANY(%s)"
        rows = conn.execute(query, [list(names)]).fetchall()
        return {str(name): str(setting) for name, setting in rows}


# -- CPU, from /proc ---------------------------------------------------------------


def stat_fields(pid: int) -> list[str]:
    """/proc/PID/stat after the command name ([] once the process is gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = stat_fields(int(entry.name))
            if fields and int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


class CpuMeter:
    """CPU seconds (user + system, and those of exited children a process has waited for,
    as PostgreSQL's postmaster does its backends) of named groups of processes."""

    def __init__(self, groups: dict[str, Callable[[], list[int]]]) -> None:
        self.groups = groups
        self.tick = os.sysconf("SC_CLK_TCK")

    def read(self) -> dict[str, dict[int, float]]:
        found: dict[str, dict[int, float]] = {}
        for name, pids in self.groups.items():
            found[name] = {}
            for pid in pids():
                fields = stat_fields(pid)
                if fields:  # utime, stime, cutime, cstime
                    found[name][pid] = sum(int(f) for f in fields[11:15]) / self.tick
        return found

    def percent(self, before: dict[str, dict[int, float]], seconds: float) -> dict[str, float]:
        """% of one core per group since `before`, over processes alive at both reads."""
        after = self.read()
        return {
            name: 100 * sum(t - before[name].get(pid, t) for pid, t in now.items()) / seconds
            for name, now in after.items()
        }

    def idle(self, seconds: float) -> dict[str, float]:
        before = self.read()
        time.sleep(seconds)
        return self.percent(before, seconds)
