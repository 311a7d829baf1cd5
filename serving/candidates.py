"""Candidate items for a recommendation, as the server keeps them: `core.ranking.popular`,
recomputed from the whole store by `refresh()`, which the server calls on a background thread
(`serving.service`), not per request. A request only reads `current`, and ranks with the
popular items' profiles as the refresh read them, rather than reading 100 profiles from the
store per request (a quarter of a ranking's time went to that).
"""
from __future__ import annotations

import time

from core.ranking import Popular, popular
from stores.online import OnlineStore


class PopularItems:
    """The `n` most popular items in `store`, as of the last `refresh()`."""

    def __init__(self, store: OnlineStore, n: int = 100):
        self.store, self.n = store, n
        self.current = Popular([], {}, {}, 0)

    def refresh(self, now_ms: int | None = None) -> None:
        # One assignment: a request sees the items and their profiles of one refresh.
        self.current = popular(self.store, self.n, int(time.time() * 1000) if now_ms is None else now_ms)
