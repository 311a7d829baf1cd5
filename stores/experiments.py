"""The experiments store: each experiment's routing state (canary stage and weight, bandit
probabilities, the decision) and its events, with one owner and many readers.

The owner (the process that analyses the experiment) writes a new state with the version it
last read, and a write from anyone else in between is refused (`Conflict`), so two owners
cannot both think they steer. Serving replicas read the state and route by it: replicas that
read the same version route every user the same way. Events (advanced, aborted, promoted,
decided) are kept in order, for the dashboard and the report.

`open_experiment_store(location)` takes what `stores.sql` takes: a SQLite file (the embedded
default), or a PostgreSQL URL where several servers share it.

>>> store = open_experiment_store(":memory:")
>>> store.get("ranker") is None
True
>>> store.put("ranker", {"weight": 0.01}, expected_version=0)
1
>>> try:
...     store.put("ranker", {"weight": 0.05}, expected_version=0)
... except Conflict as e:
...     print(e)
experiment 'ranker' is at version 1, not 0: another owner wrote it
>>> store.get("ranker").state, store.get("ranker").version
({'weight': 0.01}, 1)
>>> store.add_event("ranker", {"event": "advanced", "weight": 0.05})
1
>>> [e["event"] for _, _, e in store.events("ranker")]
['advanced']
"""
from __future__ import annotations

import dataclasses
import json
import time

from stores.sql import open_database

_SCHEMA = """
CREATE TABLE IF NOT EXISTS experiment_state (
    name TEXT NOT NULL PRIMARY KEY, version BIGINT NOT NULL, state TEXT NOT NULL, updated_ms BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS experiment_events (
    name TEXT NOT NULL, seq BIGINT NOT NULL, event_ms BIGINT NOT NULL, event TEXT NOT NULL,
    PRIMARY KEY (name, seq));
"""


class Conflict(Exception):
    """The state changed since the writer read it."""


@dataclasses.dataclass(frozen=True)
class State:
    version: int
    state: dict
    updated_ms: int


class ExperimentStore:
    def __init__(self, location: str):
        self._db = open_database(location, "experiment store", _SCHEMA)
        self.where = self._db.where

    def get(self, name: str) -> State | None:
        rows = self._db.execute("SELECT version, state, updated_ms FROM experiment_state WHERE name = ?", (name,))
        return State(rows[0][0], json.loads(rows[0][1]), rows[0][2]) if rows else None

    def put(self, name: str, state: dict, expected_version: int) -> int:
        """Writes `state` if the stored version is still `expected_version` (0: none yet);
        returns the new version."""
        with self._db.transaction(f"experiment-{name}"):
            rows = self._db.execute("SELECT version FROM experiment_state WHERE name = ?", (name,))
            current = rows[0][0] if rows else 0
            if current != expected_version:
                raise Conflict(f"experiment {name!r} is at version {current}, not {expected_version}: "
                               "another owner wrote it")
            self._db.execute(
                "INSERT INTO experiment_state VALUES (?, ?, ?, ?) ON CONFLICT (name) DO UPDATE "
                "SET version = excluded.version, state = excluded.state, updated_ms = excluded.updated_ms",
                (name, current + 1, json.dumps(state, sort_keys=True), _now_ms()))
        return current + 1

    def add_event(self, name: str, event: dict) -> int:
        """Appends an event; returns its sequence number (from 1)."""
        with self._db.transaction(f"experiment-{name}-events"):
            (last,), = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM experiment_events WHERE name = ?",
                                        (name,))
            self._db.execute("INSERT INTO experiment_events VALUES (?, ?, ?, ?)",
                             (name, last + 1, _now_ms(), json.dumps(event, sort_keys=True, default=float)))
        return last + 1

    def events(self, name: str, after: int = 0) -> list[tuple[int, int, dict]]:
        """(seq, event ms, event) of the events after `after`, in order."""
        return [(seq, ms, json.loads(e)) for seq, ms, e in self._db.execute(
            "SELECT seq, event_ms, event FROM experiment_events WHERE name = ? AND seq > ? ORDER BY seq",
            (name, after))]

    def close(self) -> None:
        self._db.close()


def open_experiment_store(location: str) -> ExperimentStore:
    return ExperimentStore(location)


def _now_ms() -> int:
    return int(time.time() * 1000)
