"""Archive rounds with backoff, and a thread that runs them beside an application.

A round that fails because the store is unreachable (or refuses) is retried
after an exponentially growing pause, up to a minute; the records wait in the
database's local log meanwhile, so a failure costs lag, never data. Both the
server (for every database it leads) and the embedded connection use these.
"""

from __future__ import annotations

import logging
import threading
import time

from shoal.archive.archiver import Archiver
from shoal.errors import Error

__all__ = ["ArchiveRounds", "BackgroundArchiver"]

logger = logging.getLogger("shoal.archive")

MAX_BACKOFF_SECONDS = 60.0


class ArchiveRounds:
    """One database's archiving: its rounds, failures in a row and next attempt.

    A database that has not changed since its last good round is quiet: it needs a
    round only for work that comes with time (a snapshot or an index write put
    off, history past retention), so it gets one every `index_seconds`, not every
    round. A node's rounds then cost what its written databases cost, not what all
    its open ones do."""

    def __init__(self, archiver: Archiver, archived: int | None = None) -> None:
        """`archived`: the version known to be in the archive already (a database
        closed after a good round and opened again), if any."""
        self.archiver = archiver
        self.failures = 0
        self.next_try = 0.0
        self.last_error: str | None = None
        self.archived_version = archived  # as of the last good round
        self._next_quiet_round = 0.0 if archived is None else self._quiet_until()

    def quiet(self) -> bool:
        """Whether nothing was committed since the last good round."""
        return self.archiver.db.version == self.archived_version

    def _quiet_until(self) -> float:
        return time.monotonic() + self.archiver.policy.index_seconds

    def due(self) -> bool:
        now = time.monotonic()
        if now < self.next_try:
            return False  # backing off after a failure
        return not self.quiet() or now >= self._next_quiet_round

    def run(self, *, final: bool = False) -> bool:
        """One round (blocking; `final`: the last, which writes the index whatever its
        schedule); False if it failed and was put off."""
        name = self.archiver.db.name
        version = self.archiver.db.version  # before the round: a commit during it is news
        try:
            self.archiver.step(final=final)
        except Error as exc:
            self.failures += 1
            delay = min(
                MAX_BACKOFF_SECONDS, self.archiver.policy.segment_seconds * 2**self.failures
            )
            self.next_try = time.monotonic() + delay
            if self.last_error != str(exc):
                logger.warning("archiving %s failed (retrying in %.0f s): %s", name, delay, exc)
            self.last_error = str(exc)
            return False
        if self.failures:
            logger.info("archiving %s caught up after %d failed round(s)", name, self.failures)
        self.failures, self.next_try, self.last_error = 0, 0.0, None
        self.archived_version = version
        self._next_quiet_round = self._quiet_until()
        return True


class BackgroundArchiver:
    """Rounds every `segment_seconds` on a daemon thread, for an embedded database;
    `close()` runs a last round, so what the application committed is archived."""

    def __init__(self, archiver: Archiver) -> None:
        self.rounds = ArchiveRounds(archiver)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="shoal-archive", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.rounds.archiver.policy.segment_seconds):
            if self.rounds.due():
                self.rounds.run()

    def close(self) -> bool:
        """Stops the thread after a last round; False if that round failed (the
        records stay in the local log for the next time the database is opened
        with its archive)."""
        self._stop.set()
        self._thread.join()
        return self.rounds.run(final=True)
