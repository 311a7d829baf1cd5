"""Batch serving: every known user's top items, scored ahead with one registry model version over
the online store's profiles, staged into a batch of the batch store (`stores.toplists`).

The ranking is the serving process's own (`core.ranking`): the same candidates (the most popular
items as of the batch's time), the same features, the same order. So a user's list in a batch
equals what the live server would rank for them at the batch's time with that model version.

    users      = Impulse | every user id in the online store
    candidates = Impulse | the popular items as of `as_of_ms`           (one value, a side input)
    users | Reshuffle | ScoreUsers (per user and device: top k) | StageTopLists (into the batch)

The batch becomes visible when the launcher commits it, after the job has written every list.
"""
from __future__ import annotations

import apache_beam as beam

from core.publishing import load_version
from core.ranking import popular, score
from models import serde
from stores.online import open_online_store
from stores.registry import open_registry
from stores.toplists import TopList, open_toplists

STAGE_EVERY = 500  # lists per write to the batch store


class RankUsers(beam.PTransform):
    """Every user of `online_store` -> `TopList`s of the `k` best of the `candidates` most popular
    items (all items when `candidates` is 0) as of `as_of_ms`, one per device of `devices`."""

    def __init__(self, registry: str, model_key: str, version: int, online_store: str, as_of_ms: int,
                 candidates: int = 100, k: int = 20, devices=("",), key_file: str | None = None):
        super().__init__()
        self.registry, self.model_key, self.version, self.online_store = registry, model_key, version, online_store
        self.as_of_ms, self.candidates, self.k, self.devices, self.key_file = \
            as_of_ms, candidates, k, tuple(devices), key_file

    def expand(self, pipeline):
        start = pipeline | "Start" >> beam.Impulse()
        popular_items = start | "PopularItems" >> beam.Map(
            lambda _, where, n, at: _popular(where, n, at), self.online_store, self.candidates, self.as_of_ms)
        return (start
                | "Users" >> beam.FlatMap(lambda _, where: _user_ids(where), self.online_store)
                | "Spread" >> beam.Reshuffle()
                | "Score" >> beam.ParDo(ScoreUsers(self.registry, self.model_key, self.version, self.online_store,
                                                   self.as_of_ms, self.k, self.devices, self.key_file),
                                        beam.pvalue.AsSingleton(popular_items)))


class ScoreUsers(beam.DoFn):
    """A user id -> one `TopList` per device, ranked by the model version (checked before it is
    unpickled) over the user's profile and the candidates' as of `as_of_ms`."""

    def __init__(self, registry, model_key, version, online_store, as_of_ms, k, devices, key_file=None):
        self.registry, self.model_key, self.version, self.online_store = registry, model_key, version, online_store
        self.as_of_ms, self.k, self.devices, self.key_file = as_of_ms, k, devices, key_file

    def setup(self):
        registry = open_registry(self.registry)
        try:
            keys = serde.KeySource(file=self.key_file, store=self.registry).resolve()
            self._model = load_version(registry, registry.get(self.model_key, self.version), keys)
        finally:
            registry.close()
        self._store = open_online_store(self.online_store)

    def process(self, user_id: str, popular_items):
        for device in self.devices:
            ranked, clock = score(self._model, self._store, user_id, device or None, popular_items.candidates(),
                                  self.as_of_ms, known=popular_items.profiles)
            yield TopList(user_id, device, clock, [{"item_id": s.item_id, "genres": list(s.genres),
                                                    "probability": s.probability} for s in ranked[:self.k]])

    def teardown(self):
        if getattr(self, "_store", None) is not None:
            self._store.close()


class StageTopLists(beam.DoFn):
    """`TopList`s -> staged into batch `batch_id` of the batch store, `STAGE_EVERY` at a time
    (a retried bundle writes the same rows again: staging is idempotent)."""

    def __init__(self, location: str, batch_id: int):
        self.location, self.batch_id = location, batch_id

    def setup(self):
        self._store = open_toplists(self.location)

    def start_bundle(self):
        self._pending = []

    def process(self, top: TopList):
        self._pending.append(top)
        if len(self._pending) >= STAGE_EVERY:
            self._flush()

    def finish_bundle(self):
        if self._pending:
            self._flush()

    def _flush(self):
        staged, self._pending = self._pending, []
        self._store.stage(self.batch_id, staged)

    def teardown(self):
        if getattr(self, "_store", None) is not None:
            self._store.close()


def _user_ids(online_store: str):
    store = open_online_store(online_store)
    try:
        return [user for user, _, _ in store.scan("user")]
    finally:
        store.close()


def _popular(online_store: str, n: int, as_of_ms: int):
    store = open_online_store(online_store)
    try:
        return popular(store, n or store.count("item"), as_of_ms)
    finally:
        store.close()
