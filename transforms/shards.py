"""Shards: many entities per key, for stateful stages whose per-key costs dominate.

In the Python SDK every key a stateful stage touches costs a fixed amount per bundle (its
state reads and writes over the runner's API) and every timer that fires costs a bundle round
trip. Keyed by user, by item or by impression id, a stream paid that for nearly every record;
keyed by shard, a firing serves all the entities of its shard that are due. Stages keep their
entities' order and results: what is ordered is ordered per entity, within its shard.
"""
from __future__ import annotations

import zlib

SHARDS = 4  # the default keys of a sharded stage: few (each costs a firing per tick), a few per parallel worker


def shard_of(entity: str, shards: int) -> int:
    """The key of `entity` among `shards`: stable across processes and runs, unlike `hash`.

    >>> shard_of("u7", 16), shard_of("u8", 16)
    (3, 2)
    """
    return zlib.crc32(entity.encode()) % shards
