"""The engine: one SQLite database whose every write is captured, logged and replayable."""

from shoal.engine.database import Database, Options, Outcome, Role, Transaction
from shoal.engine.execute import Limits, Result

__all__ = ["Database", "Limits", "Options", "Outcome", "Result", "Role", "Transaction"]
