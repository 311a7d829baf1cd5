"""A durable store of online-model snapshots, so a restarted job neither forgets nor relearns.

A runner's own state dies with a local job. `SnapshotStore` keeps, per model key, the signed
model bytes, the (event time, event id) of the last event the model applied, and the
predictions it made for recent events, all written in one SQLite transaction per learner
step. After a restart the learner resumes from the snapshot; an event replayed from the
source (its offsets were not committed yet) gets its stored prediction again instead of
being learned a second time.

Bytes are stored as given: the learner signs them (`models.serde`) and checks them on load;
each blob names the key that signed it, so a store outlives a key rotation while the old key
stays in the keyring. The key is not kept here (by default it is in `<store>.key` beside it).

`Snapshots` is the interface the pipeline uses; `open_store(location)` picks the
implementation. SQLite is the embedded default; a PostgreSQL or Redis store implements the
same four methods.

>>> store = SnapshotStore(":memory:")
>>> store.load("k") is None
True
>>> store.save("k", b"model", (5, "e2"), [("e1", 4, b"p1"), ("e2", 5, b"p2")], keep_after_ms=0)
>>> store.load("k")
(b'model', (5, 'e2'))
>>> store.predictions("k", ["e2", "e9"])
{'e2': b'p2'}
"""
from __future__ import annotations

from typing import Protocol

from stores.sqlite import connect, sqlite_path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS models (
    model_key TEXT PRIMARY KEY, blob BLOB NOT NULL, applied_time INTEGER NOT NULL,
    applied_id TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS predictions (
    model_key TEXT NOT NULL, event_id TEXT NOT NULL, event_time INTEGER NOT NULL,
    blob BLOB NOT NULL, PRIMARY KEY (model_key, event_id));
CREATE INDEX IF NOT EXISTS predictions_by_time ON predictions (model_key, event_time);
"""


class Snapshots(Protocol):
    """What the learner and the feature stages need from a snapshot store."""

    def load(self, model_key: str) -> tuple[bytes, tuple[int, str]] | None: ...

    def predictions(self, model_key: str, event_ids) -> dict[str, bytes]: ...

    def save(self, model_key: str, blob: bytes, applied: tuple, predictions, keep_after_ms: int) -> None: ...

    def close(self) -> None: ...


def open_store(location: str) -> Snapshots:
    """The store at `location`: a SQLite file path, or `sqlite:///relative` / `sqlite:////absolute`.

    >>> open_store("redis://localhost:6379")
    Traceback (most recent call last):
    ...
    ValueError: no snapshot store for 'redis://' locations (have: SQLite file paths, sqlite:///PATH); implement stores.snapshots.Snapshots
    """
    return SnapshotStore(sqlite_path(location, "snapshot store", "stores.snapshots.Snapshots"))


class SnapshotStore:
    """Model snapshots and recent predictions per model key, in SQLite at `path`."""

    def __init__(self, path: str):
        self.path = path
        # One bundle at a time uses it, but not always from the thread that opened it.
        self._db = connect(path, _SCHEMA)

    def load(self, model_key: str):
        """(model bytes, (applied event time, applied event id)), or None if never saved."""
        row = self._db.execute("SELECT blob, applied_time, applied_id FROM models WHERE model_key = ?",
                               (model_key,)).fetchone()
        return None if row is None else (row[0], (row[1], row[2]))

    def predictions(self, model_key: str, event_ids) -> dict:
        """The stored prediction bytes of those `event_ids` the model applied."""
        found = {}
        for event_id in event_ids:
            row = self._db.execute("SELECT blob FROM predictions WHERE model_key = ? AND event_id = ?",
                                   (model_key, event_id)).fetchone()
            if row is not None:
                found[event_id] = row[0]
        return found

    def save(self, model_key: str, blob: bytes, applied: tuple, predictions, keep_after_ms: int):
        """Atomically: the model, its applied clock, new predictions [(event id, event time,
        bytes)], and the removal of predictions of events before `keep_after_ms`."""
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("INSERT OR REPLACE INTO models VALUES (?, ?, ?, ?)",
                             (model_key, blob, int(applied[0]), str(applied[1])))
            self._db.executemany("INSERT OR REPLACE INTO predictions VALUES (?, ?, ?, ?)",
                                 [(model_key, e, int(t), b) for e, t, b in predictions])
            self._db.execute("DELETE FROM predictions WHERE model_key = ? AND event_time < ?",
                             (model_key, keep_after_ms))

    def close(self):
        self._db.close()
