"""Candidate items for a recommendation: the most popular items of the recent past, as the
online store's item profiles tell (impressions decayed with a half-life of 24 h, as of now),
with the genres their impressions gave them.

The list is computed from the whole store by `refresh()`, which the server calls on a
background thread (`serving.service`), not per request: a request only reads it.

>>> from stores.online import open_online_store
>>> store = open_online_store(":memory:")
>>> shown = lambda t: {"event_type": "impression", "event_time": t, "item_genres": ["drama"]}
>>> a, b = ItemProfile(), ItemProfile()
>>> for t in (0, 1, 2):
...     a.apply(shown(t))
>>> b.apply(shown(0))
>>> store.put("item", {"a": (a.state(), 2), "b": (b.state(), 0)})
>>> popular = PopularItems(store, n=1)
>>> popular.refresh(now_ms=10)
>>> [(c.item_id, c.genres, round(c.popularity, 3)) for c in popular.items]
[('a', ('drama',), 3.0)]
"""
from __future__ import annotations

import dataclasses
import heapq
import time

from core.profiles import ItemProfile
from stores.online import OnlineStore


@dataclasses.dataclass(frozen=True)
class Candidate:
    item_id: str
    genres: tuple
    popularity: float  # impressions over about the last day, decayed to the refresh time


class PopularItems:
    """The `n` most popular items in `store`, as of the last `refresh()`."""

    def __init__(self, store: OnlineStore, n: int = 100):
        self.store, self.n = store, n
        self.items: list[Candidate] = []
        self.genres: dict[str, tuple] = {}  # item -> genres, of every item in the store

    def refresh(self, now_ms: int | None = None) -> None:
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        genres, scored = {}, []
        for item, state, _ in self.store.scan("item"):
            profile = ItemProfile(state)
            genres[item] = profile.genres
            scored.append(Candidate(item, profile.genres, profile.popularity(now_ms)))
        self.genres = genres
        self.items = heapq.nlargest(self.n, scored, key=lambda c: (c.popularity, c.item_id))
