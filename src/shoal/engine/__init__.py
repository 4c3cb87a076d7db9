"""The engine: one SQLite database whose every write is captured, logged and replayable."""

from shoal.engine.database import CommitHook, Database, Options, Outcome, Role, Transaction
from shoal.engine.execute import Limits, Result

__all__ = [
    "CommitHook",
    "Database",
    "Limits",
    "Options",
    "Outcome",
    "Result",
    "Role",
    "Transaction",
]
