"""The learner's side of the model registry: publish a model key's versions at a cadence.

While a key learns, a version is published once `every_s` seconds of wall clock (default 1) or
`every_events` events learned (default: no event count) have passed since its last one,
whichever comes first, at the first chance after (a learner's firing or block); a learner that
has finished a key publishes its final model (`final=True`). A key that learned nothing since
its last version publishes nothing.

Versions are signed (`models.serde`) with the registry's keys: `keys`, by default the key file
beside the registry (`<registry>.key`, made on first use) or $STREAMML_STATE_KEY, the keys the
serving plane checks them with. A worker keeps its own cadence per key; several workers of one
job may publish a little more often than the cadence, never less.

>>> from river import linear_model
>>> from stores.registry import open_registry
>>> publisher = Publisher(":memory:", keys=serde.keyring("p" * 32), every_events=2)
>>> publisher.open()
>>> model = linear_model.LogisticRegression()
>>> [publisher.offer("clicks", model, step, clock_ms=step) is not None for step in (1, 2, 3, 3, 4)]
[True, False, True, False, False]
>>> publisher.offer("clicks", model, 4, clock_ms=4, final=True).version
3
"""
from __future__ import annotations

import math
import time

from models import serde
from stores.registry import Registry, Version, open_registry


class Publisher:
    """Publishes versions of the models it is offered to the registry at `location`."""

    def __init__(self, location: str, keys: serde.KeySource | serde.Keyring | None = None,
                 every_s: float | None = 1.0, every_events: int | None = None):
        if every_s is None and every_events is None:
            raise ValueError("a publisher needs a cadence: every_s, every_events or both")
        if (every_s is not None and every_s < 0) or (every_events is not None and every_events < 1):
            raise ValueError(f"every_s must be >= 0 and every_events >= 1 (got {every_s}, {every_events})")
        self.location, self.every_s, self.every_events = location, every_s, every_events
        self.keys = keys if keys is not None else serde.KeySource(store=location)

    def open(self):
        self._keys = serde.as_keyring(self.keys)
        self._registry = open_registry(self.location)
        self._last: dict[str, tuple[int, float]] = {}  # key -> (step, monotonic time) of its last version
        self._opened_ms = int(time.time() * 1000)
        self._looked: dict[str, float] = {}  # key -> monotonic time it last looked for a manual rollback
        self._adopted: dict[str, int] = {}  # key -> the manual rollback it last adopted

    def close(self):
        self._registry.close()

    def offer(self, key: str, model, step: int, clock_ms: int, watermark_ms: int | None = None,
              metrics: dict | None = None, final: bool = False) -> Version | None:
        """Publishes `model` (at `step` events learned, the last at `clock_ms`) if it is due;
        the version published, else None."""
        now = time.monotonic()
        last_step, last_at = self._last.get(key, (None, None))
        if step == last_step:
            return None  # nothing learned since
        due = final or last_step is None or (
            (self.every_events is not None and step - last_step >= self.every_events)
            or (self.every_s is not None and now - last_at >= self.every_s))
        if not due:
            return None
        return self.publish(key, model, step, clock_ms, watermark_ms, metrics)

    def publish(self, key: str, model, step: int, clock_ms: int, watermark_ms: int | None = None,
                metrics: dict | None = None) -> Version:
        """Publishes `model` now, whatever the cadence (a guard's known-good candidate, a rollback)."""
        self._last[key] = (step, time.monotonic())
        return self._registry.publish(key, serde.dumps(model, self._keys), step=step, clock_ms=clock_ms,
                                      watermark_ms=watermark_ms, metrics=metrics)

    def manual_rollback(self, key: str):
        """(version, model) of a manual rollback of `key` (`pipelines.rollback`) published since this
        publisher opened and not adopted yet, its signature checked; else None. Looks at most once
        per `every_s` seconds (1 without one)."""
        now = time.monotonic()
        if now - self._looked.get(key, -math.inf) < (self.every_s if self.every_s is not None else 1.0):
            return None
        self._looked[key] = now
        latest = self._registry.latest(key)
        if (latest is None or not str(latest.metrics.get("rollback_reason", "")).startswith("manual")
                or latest.published_ms < self._opened_ms or latest.version <= self._adopted.get(key, 0)):
            return None
        self._adopted[key] = latest.version
        return latest, load_version(self._registry, latest, self._keys)

    def pin(self, key: str, version: int, reason: str) -> Version:
        return self._registry.pin(key, version, reason)

    def unpin(self, key: str, version: int) -> Version:
        return self._registry.unpin(key, version)


def load_version(registry: Registry, version: Version, keys):
    """The model of a published `version`, once its signature is checked with `keys`
    (`models.serde.TamperedState` if it fails: nothing is unpickled then)."""
    return serde.loads(registry.blob(version.model_key, version.version), serde.as_keyring(keys))
