"""The online store: the latest profile of each entity (`core.profiles`), with its event-time
clock, published by the learning plane's feature stages and read by the serving plane.

A profile is stored as JSON (its `state()`: counters and times; nothing is unpickled), under
its kind (`user`, `item`) and entity id, with the event time of the last event it applied. A
write never moves a profile back in time: of two writes, the one with the later clock stays
(a replayed or retried stage may write an older profile after a newer one).

`OnlineStore` is the interface; `open_online_store(location)` picks the implementation (SQLite,
the embedded default; several processes may share one file).

>>> store = open_online_store(":memory:")
>>> store.put("user", {"u1": ([None, {}], 5_000), "u2": ([None, {}], 7_000)})
>>> store.put("user", {"u1": ([1, {"imp@1h": 1.0}], 4_000)})  # older than what it holds: kept as is
>>> store.get("user", ["u1", "u3"])
{'u1': ([None, {}], 5000)}
>>> store.clock()
7000
"""
from __future__ import annotations

import json
from typing import Protocol

from stores.sqlite import connect, sqlite_path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS profiles (
    kind TEXT NOT NULL, entity TEXT NOT NULL, clock_ms INTEGER NOT NULL, state TEXT NOT NULL,
    PRIMARY KEY (kind, entity));
"""


class OnlineStore(Protocol):
    """What the feature stages (put) and the servers (get) need from an online store."""

    def put(self, kind: str, profiles: dict) -> None: ...

    def get(self, kind: str, entities) -> dict: ...

    def scan(self, kind: str): ...

    def count(self, kind: str) -> int: ...

    def clock(self) -> int | None: ...

    def close(self) -> None: ...


def open_online_store(location: str) -> OnlineStore:
    """The online store at `location`: a SQLite file path, or `sqlite:///relative` / `sqlite:////absolute`."""
    return SQLiteOnlineStore(sqlite_path(location, "online store", "stores.online.OnlineStore"))


class SQLiteOnlineStore:
    """An `OnlineStore` in one SQLite file (WAL: servers read while the stages write)."""

    def __init__(self, path: str):
        self.path = path
        self._db = connect(path, _SCHEMA)

    def put(self, kind: str, profiles: dict) -> None:
        """Writes {entity: (state, clock ms)} in one transaction, each unless the store holds a
        later one."""
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(
                "INSERT INTO profiles VALUES (?, ?, ?, ?) ON CONFLICT (kind, entity) DO UPDATE SET "
                "clock_ms = excluded.clock_ms, state = excluded.state WHERE excluded.clock_ms >= profiles.clock_ms",
                [(kind, entity, int(clock), json.dumps(state)) for entity, (state, clock) in profiles.items()])

    def get(self, kind: str, entities) -> dict:
        """{entity: (state, clock ms)} of those `entities` it holds."""
        entities = list(dict.fromkeys(entities))
        found = {}
        for i in range(0, len(entities), 500):  # SQLite's limit on parameters
            part = entities[i:i + 500]
            rows = self._db.execute(f"SELECT entity, state, clock_ms FROM profiles WHERE kind = ? AND entity IN "
                                    f"({', '.join('?' * len(part))})", (kind, *part)).fetchall()
            found.update((entity, (json.loads(state), clock)) for entity, state, clock in rows)
        return found

    def scan(self, kind: str):
        """(entity, state, clock ms) of every `kind` profile it holds."""
        for entity, state, clock in self._db.execute(
                "SELECT entity, state, clock_ms FROM profiles WHERE kind = ?", (kind,)).fetchall():
            yield entity, json.loads(state), clock

    def count(self, kind: str) -> int:
        """How many `kind` profiles it holds."""
        return self._db.execute("SELECT COUNT(*) FROM profiles WHERE kind = ?", (kind,)).fetchone()[0]

    def clock(self) -> int | None:
        """The latest event time any profile has applied (how fresh the store is), or None."""
        return self._db.execute("SELECT MAX(clock_ms) FROM profiles").fetchone()[0]

    def close(self):
        self._db.close()
