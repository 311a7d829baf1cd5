"""Shards: many entities per key, for stateful stages whose per-key costs dominate.

In the Python SDK every key a stateful stage touches costs a fixed amount per bundle (its
state reads and writes over the runner's API) and every timer that fires costs a bundle round
trip. Keyed by user, by item or by impression id, a stream paid that for nearly every record;
keyed by shard, a firing serves all the entities of its shard that are due. Stages keep their
entities' order and results: what is ordered is ordered per entity, within its shard.

A shard's entries live in two state cells: a value cell holding them all, rewritten only by a
compaction, and a bag of changes, so a call writes what it changed, not the shard
(`read_entries`, `write_entries`). On Prism 2.77 a bag cleared and refilled in one callback
lost some elements and repeated others: the bag is only appended to, or cleared.
"""
from __future__ import annotations

import zlib
from typing import Callable

SHARDS = 4  # the default keys of a sharded stage: few (each costs a firing per tick), a few per parallel worker


def shard_of(entity: str, shards: int) -> int:
    """The key of `entity` among `shards`: stable across processes and runs, unlike `hash`.

    >>> shard_of("u7", 16), shard_of("u8", 16)
    (3, 2)
    """
    return zlib.crc32(entity.encode()) % shards


def read_entries(cell, log) -> dict:
    """A shard's entries: the `cell`'s, then the `log`'s `(key, value)` changes in order (a
    value of None removed the key)."""
    entries = dict(cell.read() or {})
    for key, value in log.read():
        if value is None:
            entries.pop(key, None)
        else:
            entries[key] = value
    return entries


def write_entries(changed: dict, logged: int, live: int, everything: Callable[[], dict], cell, log) -> int:
    """Writes the `changed` entries (None: removed) to the `log`, which holds `logged` entries,
    for a shard of `live` entries; once the log would be mostly superseded entries, writes
    `everything()` to the `cell` and clears the log instead. Returns the entries now logged."""
    if logged + len(changed) > 2 * live + 16:
        cell.write(everything())
        log.clear()
        return 0
    for key, value in changed.items():
        log.add((key, value))
    return logged + len(changed)
