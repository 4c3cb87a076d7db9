"""What a single SQL statement is, from its leading keyword.

Capture needs to know, before a statement runs, whether it changes the schema
(so the changeset is cut there) or sets a pragma that travels. The statement's
own text is what APSW hands the tracer, so its first keyword is reliable.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from enum import Enum
from functools import lru_cache

import apsw

__all__ = [
    "Kind",
    "classify",
    "is_single_statement",
    "leading_keyword",
    "quote_identifier",
    "replicated_pragma",
    "split_statements",
]

_LEADING_NOISE = re.compile(r"(?:\s+|--[^\n]*(?:\n|\Z)|/\*.*?(?:\*/|\Z))*", re.S)
_WORD = re.compile(r"[A-Za-z]+")
_PRAGMA = re.compile(r"PRAGMA\s+(?:(?:\"?\w+\"?)\s*\.\s*)?\"?(\w+)\"?\s*(=|\()?", re.I | re.S)
_TRAVELLING_PRAGMAS = frozenset({"user_version", "application_id"})


class Kind(Enum):
    READ = "read"  # SELECT, VALUES, EXPLAIN: no writes unless a function makes them
    WRITE = "write"  # INSERT, UPDATE, DELETE, REPLACE, WITH ... (rows only)
    SCHEMA = "schema"  # CREATE, DROP, ALTER, ANALYZE, REINDEX: cut the changeset here
    PRAGMA = "pragma"
    VACUUM = "vacuum"
    TRANSACTION = "transaction"  # BEGIN, COMMIT, END, ROLLBACK, SAVEPOINT, RELEASE
    OTHER = "other"


_KINDS = {
    "SELECT": Kind.READ,
    "VALUES": Kind.READ,
    "EXPLAIN": Kind.READ,
    "INSERT": Kind.WRITE,
    "UPDATE": Kind.WRITE,
    "DELETE": Kind.WRITE,
    "REPLACE": Kind.WRITE,
    "WITH": Kind.WRITE,
    "CREATE": Kind.SCHEMA,
    "DROP": Kind.SCHEMA,
    "ALTER": Kind.SCHEMA,
    "ANALYZE": Kind.SCHEMA,
    "REINDEX": Kind.SCHEMA,
    "PRAGMA": Kind.PRAGMA,
    "VACUUM": Kind.VACUUM,
    "BEGIN": Kind.TRANSACTION,
    "COMMIT": Kind.TRANSACTION,
    "END": Kind.TRANSACTION,
    "ROLLBACK": Kind.TRANSACTION,
    "SAVEPOINT": Kind.TRANSACTION,
    "RELEASE": Kind.TRANSACTION,
}


def _strip(sql: str) -> str:
    match = _LEADING_NOISE.match(sql)
    return sql[match.end() :] if match else sql


def leading_keyword(sql: str) -> str:
    """The first word of `sql` in upper case, past blanks and comments ("" if none)."""
    word = _WORD.match(_strip(sql))
    return word.group(0).upper() if word else ""


@lru_cache(maxsize=4096)
def classify(sql: str) -> Kind:
    """The kind of the (first) statement in `sql`."""
    return _KINDS.get(leading_keyword(sql), Kind.OTHER)


def quote_identifier(name: str) -> str:
    """`name` as a double-quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


@lru_cache(maxsize=1024)
def replicated_pragma(sql: str) -> str | None:
    """The pragma's name when `sql` sets one that must travel, else None."""
    match = _PRAGMA.match(_strip(sql))
    if match and match.group(2) and match.group(1).lower() in _TRAVELLING_PRAGMAS:
        return match.group(1).lower()
    return None


def is_single_statement(sql: str) -> bool:
    """True when `sql` certainly holds one statement: no ';' but trailing ones.
    (A ';' inside a literal or comment makes it False, which only costs speed.)"""
    return ";" not in sql.rstrip(" \t\r\n;")


def split_statements(text: str) -> Iterator[str]:
    """The complete statements of a SQL script, each with its ';' (a trailing
    incomplete one as it is). A ';' counts only where SQLite's own tokenizer says
    the statement is complete, so literals, comments and trigger bodies are safe."""
    start = 0
    at = text.find(";")
    while at != -1:
        candidate = text[start : at + 1]
        if apsw.complete(candidate):
            if candidate.strip(" \t\r\n;"):
                yield candidate.strip()
            start = at + 1
        at = text.find(";", at + 1)
    rest = text[start:].strip()
    if rest and _strip(rest):
        yield rest
