"""The models a server answers with: the newest verified version of each model key, reloaded
while it serves.

`LiveModels.refresh()` looks for a newer version of each key in the registry and loads it only
once its signature checks (`models.serde`); a version that fails is never served: it is
counted, logged, and the key stays on the version it had. A reload swaps a whole new mapping
in, so a request in flight finishes with the model it started with and none waits for a
reload (the server calls `refresh()` on a background thread: `serving.service`).

>>> from river import linear_model
>>> from models import serde
>>> from stores.registry import open_registry
>>> keys, registry = serde.keyring("s" * 32), open_registry(":memory:")
>>> live = LiveModels(registry, keys, ["clicks"])
>>> live.refresh(), live.get("clicks")
(0, None)
>>> _ = registry.publish("clicks", serde.dumps(linear_model.LogisticRegression(), keys), step=3, clock_ms=9)
>>> live.refresh(), live.get("clicks").version.version
(1, 1)
"""
from __future__ import annotations

import dataclasses
import gc
import logging
import threading
import time

from core.publishing import load_version
from models import serde
from stores.registry import Registry, Version

LOG = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class LiveModel:
    version: Version
    model: object
    loaded_at: float  # wall clock, seconds


class LiveModels:
    """The newest verified version of each of `model_keys` in `registry`."""

    def __init__(self, registry: Registry, keys: serde.Keyring, model_keys: list[str]):
        self.registry, self.keys, self.model_keys = registry, keys, list(model_keys)
        self._live: dict[str, LiveModel] = {}
        self.rejected = 0  # versions that failed their signature check
        self._refused: dict[str, int] = {}  # key -> the newest version refused (not tried again)
        self._lock = threading.Lock()  # one refresh at a time

    def watch(self, model_keys: list[str]) -> None:
        """Also keeps these model keys live, from the next refresh (an experiment's variants)."""
        with self._lock:
            self.model_keys = list(dict.fromkeys([*self.model_keys, *model_keys]))

    def get(self, model_key: str) -> LiveModel | None:
        return self._live.get(model_key)

    def all(self) -> dict[str, LiveModel]:
        return dict(self._live)

    def refresh(self) -> int:
        """Loads every newer verified version; returns how many it loaded."""
        with self._lock:
            live, loaded = dict(self._live), 0
            for key in self.model_keys:
                newest = self.registry.latest(key)
                current = live.get(key)
                if newest is None or (current is not None and newest.version <= current.version.version) \
                        or newest.version == self._refused.get(key):
                    continue
                try:
                    model = load_version(self.registry, newest, self.keys)
                except serde.TamperedState as e:
                    self.rejected += 1
                    self._refused[key] = newest.version
                    LOG.error("not serving version %d of %r: %s", newest.version, key, e)
                    continue
                live[key] = LiveModel(newest, model, time.time())
                loaded += 1
            self._live = live  # one swap: a request sees the old mapping or the new one
            if loaded:
                # A model is many small objects that live long: out of the collector's sight, its
                # full collections stay short (one over the whole heap paused answers ~100 ms).
                gc.freeze()
            return loaded
