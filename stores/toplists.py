"""The batch store: each user's top items computed ahead by a batch job
(`pipelines.batch_serve`), looked up by the serving process instead of ranking on request.

A batch is written in three steps: `begin` (a new batch id, with the model version it was scored
with and the time its features are as of), `stage` (lists, in any number of calls, from any
number of workers; a list staged twice is written once), `commit` (the batch becomes the current
one). A reader only ever sees the current batch, whole: `get` reads the current batch's list in
one statement, so a commit that lands in the middle of a lookup is either wholly before it or
wholly after it, and lookups go on while the next batch is staged. A commit keeps the batch
before it (to go back to with `commit` of its id) and deletes older ones, and batches begun a
day ago and never committed (a job that died).

`open_toplists(location)` takes what `stores.sql` takes: a SQLite file (the embedded default),
or a PostgreSQL URL, where several servers share the store.

>>> store = open_toplists(":memory:")
>>> batch = store.begin("recommender", model_version=3, features_ms=1_000)
>>> store.stage(batch, [TopList("u1", "", 900, [{"item_id": "i1", "genres": ["drama"], "probability": 0.2}])])
>>> store.get("u1") is None  # staged, not committed
True
>>> info = store.commit(batch)
>>> (info.batch_id, info.model_version, info.lists), store.get("u1").items[0]["item_id"]
((1, 3, 1), 'i1')
>>> store.get("u1").batch.batch_id, store.get("u2")
(1, None)
"""
from __future__ import annotations

import dataclasses
import functools
import json
import time

from stores.sql import open_database

ABANDONED_MS = 24 * 3600 * 1000  # a batch begun this long ago and never committed is deleted

_SCHEMA = """
CREATE TABLE IF NOT EXISTS toplist_batches (
    batch_id BIGINT NOT NULL PRIMARY KEY, model_key TEXT NOT NULL, model_version BIGINT NOT NULL,
    features_ms BIGINT NOT NULL, created_ms BIGINT NOT NULL, committed_ms BIGINT, lists BIGINT);
CREATE TABLE IF NOT EXISTS toplists (
    batch_id BIGINT NOT NULL, user_id TEXT NOT NULL, device TEXT NOT NULL, user_clock_ms BIGINT,
    items TEXT NOT NULL, PRIMARY KEY (batch_id, user_id, device));
CREATE TABLE IF NOT EXISTS toplist_current (
    one INTEGER NOT NULL PRIMARY KEY CHECK (one = 1), batch_id BIGINT NOT NULL);
"""
_BATCH = "b.batch_id, b.model_key, b.model_version, b.features_ms, b.created_ms, b.committed_ms, b.lists"


@dataclasses.dataclass(frozen=True)
class Batch:
    batch_id: int
    model_key: str
    model_version: int  # the registry version that scored it
    features_ms: int  # the time its features are as of (profiles decayed to then)
    created_ms: int
    committed_ms: int | None = None
    lists: int | None = None  # how many lists it holds, once committed


@dataclasses.dataclass(frozen=True)
class TopList:
    user_id: str
    device: str  # "" for a list made for no particular device
    user_clock_ms: int | None  # the user's profile clock it was scored with (None: a new user)
    items: list  # [{"item_id", "genres", "probability"}], best first (as `open_toplists` decodes them)
    batch: Batch | None = None  # set on the lists `get` returns


class TopLists:
    def __init__(self, location: str, loads=json.loads):
        self._db = open_database(location, "batch store", _SCHEMA)
        self.where, self._loads = self._db.where, loads

    def begin(self, model_key: str, model_version: int, features_ms: int) -> int:
        """A new batch's id (ids only increase)."""
        with self._db.transaction("toplists"):
            (last,), = self._db.execute("SELECT COALESCE(MAX(batch_id), 0) FROM toplist_batches")
            self._db.execute("INSERT INTO toplist_batches VALUES (?, ?, ?, ?, ?, NULL, NULL)",
                             (last + 1, model_key, model_version, features_ms, _now_ms()))
        return last + 1

    def stage(self, batch_id: int, lists) -> None:
        """Writes `lists` (`TopList`s) into the batch, not yet visible."""
        rows = [(batch_id, t.user_id, t.device, t.user_clock_ms, json.dumps(t.items)) for t in lists]
        with self._db.transaction("toplists-stage"):
            self._db.executemany(
                "INSERT INTO toplists VALUES (?, ?, ?, ?, ?) ON CONFLICT (batch_id, user_id, device) DO UPDATE "
                "SET user_clock_ms = excluded.user_clock_ms, items = excluded.items", rows)

    def commit(self, batch_id: int) -> Batch:
        """Makes `batch_id` the current batch (one statement: readers see the old or the new);
        keeps the one it replaces, deletes older ones. A batch without lists is refused."""
        with self._db.transaction("toplists"):
            (lists,), = self._db.execute("SELECT COUNT(*) FROM toplists WHERE batch_id = ?", (batch_id,))
            if not self._db.execute("SELECT 1 FROM toplist_batches WHERE batch_id = ?", (batch_id,)):
                raise ValueError(f"no batch {batch_id} in {self.where}")
            if lists == 0:
                raise ValueError(f"batch {batch_id} holds no lists: not committed")
            now = _now_ms()
            self._db.execute("UPDATE toplist_batches SET committed_ms = ?, lists = ? WHERE batch_id = ?",
                             (now, lists, batch_id))
            previous = self._db.execute("SELECT batch_id FROM toplist_current")
            self._db.execute("INSERT INTO toplist_current VALUES (1, ?) ON CONFLICT (one) DO UPDATE "
                             "SET batch_id = excluded.batch_id", (batch_id,))
            keep = {batch_id, *(b for (b,) in previous)}
            stale = [b for (b, committed, created) in self._db.execute(
                "SELECT batch_id, committed_ms, created_ms FROM toplist_batches")
                if b not in keep and (committed is not None or created < now - ABANDONED_MS)]
            for b in stale:
                self._db.execute("DELETE FROM toplists WHERE batch_id = ?", (b,))
                self._db.execute("DELETE FROM toplist_batches WHERE batch_id = ?", (b,))
        return self.current()

    def current(self) -> Batch | None:
        rows = self._db.execute(f"SELECT {_BATCH} FROM toplist_current c "
                                "JOIN toplist_batches b ON b.batch_id = c.batch_id")
        return Batch(*rows[0]) if rows else None

    def get(self, user_id: str, device: str = "") -> TopList | None:
        """The current batch's list for the user (and device), or None."""
        rows = self._db.execute(
            f"SELECT t.user_clock_ms, t.items, {_BATCH} FROM toplist_current c "
            "JOIN toplists t ON t.batch_id = c.batch_id AND t.user_id = ? AND t.device = ? "
            "JOIN toplist_batches b ON b.batch_id = c.batch_id", (user_id, device))
        if not rows:
            return None
        clock, items, *batch = rows[0]
        return TopList(user_id, device, clock, self._loads(items), Batch(*batch))

    def users(self) -> list[str]:
        """The users the current batch holds lists for."""
        return [u for (u,) in self._db.execute("SELECT DISTINCT t.user_id FROM toplist_current c "
                                                "JOIN toplists t ON t.batch_id = c.batch_id ORDER BY t.user_id")]

    def close(self) -> None:
        self._db.close()


def open_toplists(location: str, decoded: int = 0, decode=None) -> TopLists:
    """The batch store at `location`. `decoded`: how many decoded lists to keep, by their JSON
    text (a server's: the users asked about most are decoded once per batch, not once per lookup,
    a tenth of a lookup); the lists `get` returns are then shared between calls: read them only.
    `decode`: what a list's items become, from the dicts `json.loads` makes of them (a server
    makes its ranked items once per list, not once per lookup); the dicts themselves by default.

    >>> store = open_toplists(":memory:", decoded=8, decode=lambda items: [i["item_id"] for i in items])
    >>> batch = store.begin("recommender", model_version=1, features_ms=0)
    >>> store.stage(batch, [TopList("u1", "", None, [{"item_id": "i1", "genres": [], "probability": 0.2}])])
    >>> _ = store.commit(batch)
    >>> store.get("u1").items, store.get("u1").items is store.get("u1").items
    (['i1'], True)
    """
    loads = (lambda text: decode(json.loads(text))) if decode else json.loads
    return TopLists(location, functools.lru_cache(maxsize=decoded)(loads) if decoded else loads)


def _now_ms() -> int:
    return int(time.time() * 1000)
