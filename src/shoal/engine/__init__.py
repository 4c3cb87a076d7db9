"""The engine: one SQLite database whose every write is captured, logged and replayable."""

from shoal.engine.database import Database, Options, Outcome, Role, read_file
from shoal.engine.execute import Limits, Result
from shoal.engine.transaction import CommitHook, Transaction

__all__ = [
    "CommitHook",
    "Database",
    "Limits",
    "Options",
    "Outcome",
    "Result",
    "Role",
    "Transaction",
    "read_file",
]
