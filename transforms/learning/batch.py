"""The learner on bounded input: every event of a key is known before any is applied, so each
shard of model keys is grouped once (GroupByKey) and each key's events applied in one sorted
pass. No Beam state, no timers: a key's model lives only in that call (and, with a store, is
resumed from and saved to it, as in streaming)."""
from __future__ import annotations

import collections
import zlib


from transforms.chunks import flatten
from transforms.learning.base import LearnerDoFn, emit

SHARDS = 256  # groups of model keys, each applied by one call


def shard_of(model_key: str, shards: int = SHARDS) -> int:
    """The shard of a model key in batch runs: stable across processes and runs.

    >>> shard_of("default") == shard_of("default"), 0 <= shard_of("k7") < SHARDS
    (True, True)
    """
    return zlib.crc32(model_key.encode()) % shards


class ApplyShardDoFn(LearnerDoFn):
    """`(shard, [chunk of Examples, ...])` -> predictions, dead letters, learned examples."""

    def process(self, element):
        _, chunks = element
        by_key = collections.defaultdict(list)
        for example in flatten(chunks):
            by_key[example.model_key].append(example)
        for key in sorted(by_key):
            yield from self._apply_key(key, by_key[key])

    def _apply_key(self, key, ready):
        learner, store = self.learner, self.learner.snapshots
        blob, clock = (store.load(key) or (None, None)) if store is not None else (None, None)
        model, step = learner.resume(key, blob)
        out, made, learned, last, step = learner.apply(key, ready, model, step, clock)
        if last is not None and store is not None:
            learner.save(key, model, step, last, made, learned)
        return emit(out, made, learned)
