"""What the SQLite stores share: where a location points, and how a connection is opened.

>>> sqlite_path("out/x.sqlite", "store"), sqlite_path("sqlite:///out/x.sqlite", "store")
('out/x.sqlite', 'out/x.sqlite')
>>> sqlite_path("sqlite:////tmp/x.sqlite", "store")
'/tmp/x.sqlite'
>>> sqlite_path("redis://localhost:6379", "model registry", "stores.registry.Registry")
Traceback (most recent call last):
...
ValueError: no model registry for 'redis://' locations (have: SQLite file paths, sqlite:///PATH); implement stores.registry.Registry
"""
from __future__ import annotations

import sqlite3


def sqlite_path(location: str, what: str, interface: str = "", others: tuple = ()) -> str:
    """The file of `location`: a SQLite file path, or `sqlite:///relative` / `sqlite:////absolute`
    (the error for any other scheme names `others`, the store's other locations)."""
    scheme, sep, rest = location.partition("://")
    if not sep:
        return location
    if scheme == "sqlite":
        return rest[1:] if rest.startswith("/") else rest
    have = ", ".join(("SQLite file paths", "sqlite:///PATH", *others))
    raise ValueError(f"no {what} for '{scheme}://' locations (have: {have})"
                     + (f"; implement {interface}" if interface else ""))


def connect(path: str, schema: str) -> sqlite3.Connection:
    """A connection to the file at `path` (or ":memory:") with `schema` created, in autocommit
    mode (transactions are explicit), usable from any thread (one at a time), and in WAL mode so
    that readers in other processes do not wait for a writer."""
    db = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
    if path != ":memory:":
        db.execute("PRAGMA journal_mode=WAL")
        # Survives a killed process (not a power cut) at a fraction of FULL's cost.
        db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(schema)
    return db
