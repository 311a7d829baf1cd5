"""What stateful stages keep live between bundles, per process: the per-key objects (models,
profiles, waiting entries) rebuilt from Beam state only when this process's copy is stale.

The SDK harness runs bundles on a pool of threads, each bundle with its own instance of the
DoFn: a cache held by the instance missed whenever a key's next bundle went to another one
(measured on a sharded stage: a tenth of the stage's time went to rebuilding from state). So
the cache belongs to the DoFn as built in the pipeline (`owner`, an id it carries), shared by
its instances in the process. An item is valid while the key's state holds the token written
with it: a runner processes a key in one bundle at a time, and a retried bundle, another
process or a restart finds another token and rebuilds the item from state.
"""
from __future__ import annotations

import collections
import threading
import uuid

_LOCK = threading.Lock()
_CACHES: dict[str, "LiveCache"] = {}


class LiveCache:
    """Items with a `token` attribute, per key, the least recently kept dropped past `limit`.

    >>> from types import SimpleNamespace
    >>> cache = LiveCache(limit=1)
    >>> cache.keep("a", SimpleNamespace(token=7))
    >>> cache.take("a", 7).token
    7
    >>> cache.keep("a", SimpleNamespace(token=7))
    >>> cache.take("a", 8) is None  # the state holds another token: rebuild from state
    True
    """

    def __init__(self, limit: int):
        self.limit, self._items, self._lock = limit, collections.OrderedDict(), threading.Lock()

    def take(self, key, token):
        """The item of `key` if it was kept with `token`, taken out (keep it again once the
        bundle's work on it has succeeded); else None."""
        with self._lock:
            item = self._items.pop(key, None)
        return item if item is not None and item.token == token else None

    def keep(self, key, item):
        with self._lock:
            self._items[key] = item
            while len(self._items) > self.limit:
                self._items.popitem(last=False)


def new_owner() -> str:
    """An id for a DoFn as built in the pipeline: pickled with it, the same in all its instances."""
    return uuid.uuid4().hex


def live_cache(owner: str, limit: int) -> LiveCache:
    """The process's cache of `owner` (created with `limit` on first use)."""
    with _LOCK:
        return _CACHES.setdefault(owner, LiveCache(limit))
