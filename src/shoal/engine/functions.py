"""SQL functions an application writes in Python: sqlite3's `create_function`
and `create_aggregate`, made to hold on every connection of a database.

They run in the process that registered them, and nowhere else. A write that
calls one replicates like any other, since copies apply the rows it changed, not
its SQL; but a copy, a node or a restore has no such function, so a view,
trigger, index or CHECK constraint that calls one works only here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import apsw

from shoal.errors import FunctionFailed, ProgrammingError

__all__ = ["Aggregate", "Function"]

MAX_NAME_BYTES = 255  # SQLite's limit on a function's name


class Aggregate(Protocol):
    """What sqlite3's `create_aggregate` takes: a class made once per group."""

    def step(self, *args: Any) -> None: ...

    def finalize(self) -> Any: ...


@dataclass(frozen=True)
class Function:
    """One registration: a scalar function, an aggregate class, or None to remove
    what was registered under the name and number of arguments."""

    name: str
    narg: int
    scalar: Callable[..., Any] | None = None
    aggregate: Callable[[], Aggregate] | None = None
    deterministic: bool = False

    def __post_init__(self) -> None:
        if not self.name or len(self.name.encode()) > MAX_NAME_BYTES:
            raise ProgrammingError(
                f"a function's name must be 1 to {MAX_NAME_BYTES} bytes, not {self.name!r:.40}"
            )
        if self.narg < -1:
            raise ProgrammingError(f"narg must be -1 (any number) or more, not {self.narg}")

    @property
    def key(self) -> tuple[str, int]:
        """What a later registration replaces (SQLite's names ignore case)."""
        return self.name.lower(), self.narg

    def install(self, conn: apsw.Connection) -> None:
        """Registers it on `conn` (or removes it there)."""
        if self.aggregate is not None:
            conn.create_aggregate_function(self.name, self._contexts, self.narg)
        elif self.scalar is not None:
            conn.create_scalar_function(
                self.name, self._call, self.narg, deterministic=self.deterministic
            )
        else:
            conn.create_scalar_function(self.name, None, self.narg)

    def _call(self, *args: Any) -> Any:
        assert self.scalar is not None
        try:
            return self.scalar(*args)
        except Exception as exc:
            raise self._failed(exc) from None

    def _contexts(self) -> tuple[Aggregate, Callable[..., None], Callable[[Aggregate], Any]]:
        """APSW's aggregate factory: a fresh instance of the class, and how to step
        it and finish it in sqlite3's terms."""
        assert self.aggregate is not None
        try:
            context = self.aggregate()
        except Exception as exc:
            raise self._failed(exc) from None
        return context, self._step, self._finalize

    def _step(self, context: Aggregate, *args: Any) -> None:
        try:
            context.step(*args)
        except Exception as exc:
            raise self._failed(exc) from None

    def _finalize(self, context: Aggregate) -> Any:
        try:
            return context.finalize()
        except Exception as exc:
            raise self._failed(exc) from None

    def _failed(self, exc: Exception) -> FunctionFailed:
        return FunctionFailed(
            f"user-defined function {self.name}() raised {type(exc).__name__}: {exc}"
        )
