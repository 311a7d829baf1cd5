"""Candidate items for a recommendation: the most popular items of the recent past, as the
online store's item profiles tell (impressions decayed with a half-life of 24 h, as of now),
with the genres their impressions gave them.

The list is computed from the whole store by `refresh()`, which the server calls on a
background thread (`serving.service`), not per request: a request only reads it, and ranks with
the popular items' profiles as the refresh read them (`profiles`), rather than reading 100
profiles from the store per request (a quarter of a ranking's time went to that).

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
        self.profiles: dict[str, tuple] = {}  # item -> (state, clock ms), of the popular items

    def refresh(self, now_ms: int | None = None) -> None:
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        genres, scored, stored = {}, [], {}
        for item, state, clock in self.store.scan("item"):
            profile = ItemProfile(state)
            genres[item], stored[item] = profile.genres, (state, clock)
            scored.append(Candidate(item, profile.genres, profile.popularity(now_ms)))
        items = heapq.nlargest(self.n, scored, key=lambda c: (c.popularity, c.item_id))
        # One assignment each, items last: a request that sees the new items sees their profiles.
        self.genres, self.profiles = genres, {c.item_id: stored[c.item_id] for c in items}
        self.items = items
