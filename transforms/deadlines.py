"""Entries that wait for a deadline of event time, many ids per key: a shard of attribution
windows waiting to close, of predictions waiting for their labels.

Keyed by id, every entry cost its own timer firing and state round trips, the main cost of such
a stage on a stream. `ShardDeadlinesDoFn` keys by shard (`transforms.shards`) instead and closes
the due entries of a whole tick in one firing, with the `flush` and `sweep` timers of
`transforms.eventtime` over the deadlines (they hold the output watermark at the earliest, so
what expires is emitted at its own deadline).

State per shard: the waiting entries as one cell (`open`, rewritten only by a compaction) plus
a bag of changes (`changes`: id -> the entry's new packed form and deadline, or None once it
left), so a call writes what it changed, not the shard; `clock` holds the timers' span, the
entries in `changes` and a token new at every write. A worker process keeps each shard's
entries live (`transforms.livecache`) and uses them while `clock` holds the token it last
wrote; any other token (a retried bundle, another worker, a restart) rebuilds them from
state. `transforms.shards` reads and writes the two cells.
"""
from __future__ import annotations

import bisect
import dataclasses
import operator
import secrets

import apache_beam as beam
from apache_beam import coders
from apache_beam.transforms import userstate
from apache_beam.transforms.timeutil import TimeDomain

from transforms.eventtime import NOTHING_WAITS, TICK_MS, Timers, applied_up_to
from transforms.livecache import live_cache, new_owner
from transforms.shards import read_entries, write_entries

_DEADLINE = operator.itemgetter(0)


@dataclasses.dataclass
class Waiting:
    """A shard's waiting entries, as a worker keeps them, and what changed since the last write."""
    token: int | None = None
    entries: dict = dataclasses.field(default_factory=dict)  # id -> (entry, deadline ms)
    deadlines: list = dataclasses.field(default_factory=list)  # sorted (deadline ms, id)
    changed: dict = dataclasses.field(default_factory=dict)  # id -> (entry, deadline), or None: left

    def get(self, entry_id):
        """The entry waiting under `entry_id`, or None."""
        found = self.entries.get(entry_id)
        return found and found[0]

    def put(self, entry_id, entry, deadline: int):
        """Makes `entry` wait under `entry_id` until `deadline` (ms)."""
        old = self.entries.get(entry_id)
        if old is None or old[1] != deadline:
            if old is not None:
                self.deadlines.remove((old[1], entry_id))
            bisect.insort(self.deadlines, (deadline, entry_id))
        self.entries[entry_id] = self.changed[entry_id] = (entry, deadline)

    def drop(self, entry_id):
        """Removes what waits under `entry_id`."""
        _, deadline = self.entries.pop(entry_id)
        self.deadlines.remove((deadline, entry_id))
        self.changed[entry_id] = None

    def due(self, at_ms: int) -> list:
        """Removes and returns [(deadline, id, entry)] of the entries due at or before `at_ms`."""
        split = bisect.bisect_right(self.deadlines, at_ms, key=_DEADLINE)
        due, self.deadlines = self.deadlines[:split], self.deadlines[split:]
        for _, entry_id in due:
            self.changed[entry_id] = None
        return [(deadline, entry_id, self.entries.pop(entry_id)[0]) for deadline, entry_id in due]


class ShardDeadlinesDoFn(beam.DoFn):
    """`(shard, record)` -> what `arrive` yields per record, and what `expire` yields per entry
    once the watermark passes its deadline. Subclasses define those two, and `pack` / `unpack`
    (an entry as plain data for state)."""

    CLOCK = userstate.ReadModifyWriteStateSpec("clock", coders.FastPrimitivesCoder())  # (span, changes, token)
    OPEN = userstate.ReadModifyWriteStateSpec("open", coders.FastPrimitivesCoder())  # id -> (packed, deadline)
    CHANGES = userstate.BagStateSpec("changes", coders.FastPrimitivesCoder())  # (id, (packed, deadline) | None)
    FLUSH = userstate.TimerSpec("flush", TimeDomain.WATERMARK)
    SWEEP = userstate.TimerSpec("sweep", TimeDomain.WATERMARK)
    LIVE_SHARDS = 1_000  # shards whose entries a worker keeps (least recent dropped)
    tick_ms = TICK_MS

    def __init__(self):
        self._owner = new_owner()

    def arrive(self, waiting: Waiting, record):
        """Yields the outputs of `record`, changing `waiting` (put, drop) as it goes."""
        raise NotImplementedError

    def expire(self, entry_id, entry, deadline: int):
        """Yields the outputs of an entry whose deadline the watermark passed."""
        raise NotImplementedError

    def pack(self, entry):
        return entry

    def unpack(self, packed):
        return packed

    def setup(self):
        self._live = live_cache(self._owner, self.LIVE_SHARDS)

    def process(self, element, clock_state=beam.DoFn.StateParam(CLOCK), open_state=beam.DoFn.StateParam(OPEN),
                changes=beam.DoFn.StateParam(CHANGES), flush=beam.DoFn.TimerParam(FLUSH), sweep=beam.DoFn.TimerParam(SWEEP)):
        shard, record = element
        span, n_changes, token = clock_state.read() or (NOTHING_WAITS, 0, None)
        waiting = self._take(shard, token, open_state, changes)
        yield from self.arrive(waiting, record)
        new = [change[1] for change in waiting.changed.values() if change is not None]
        if new:
            timers = Timers(flush, sweep, 0, self.tick_ms)
            span = timers.awaiting(min(new), max(new), span) or span
        self._write(shard, waiting, span, n_changes, clock_state, open_state, changes)

    @userstate.on_timer(FLUSH)
    def on_flush(self, shard=beam.DoFn.KeyParam, fired_at=beam.DoFn.TimestampParam,
                 clock_state=beam.DoFn.StateParam(CLOCK), open_state=beam.DoFn.StateParam(OPEN),
                 changes=beam.DoFn.StateParam(CHANGES), flush=beam.DoFn.TimerParam(FLUSH), sweep=beam.DoFn.TimerParam(SWEEP)):
        yield from self._close(shard, fired_at, clock_state, open_state, changes,
                               Timers(flush, sweep, 0, self.tick_ms), "flush")

    @userstate.on_timer(SWEEP)
    def on_sweep(self, shard=beam.DoFn.KeyParam, fired_at=beam.DoFn.TimestampParam,
                 clock_state=beam.DoFn.StateParam(CLOCK), open_state=beam.DoFn.StateParam(OPEN),
                 changes=beam.DoFn.StateParam(CHANGES), flush=beam.DoFn.TimerParam(FLUSH), sweep=beam.DoFn.TimerParam(SWEEP)):
        yield from self._close(shard, fired_at, clock_state, open_state, changes,
                               Timers(flush, sweep, 0, self.tick_ms), "sweep")

    def _close(self, shard, fired_at, clock_state, open_state, changes, timers, fired):
        """Expires the entries due at or before `fired_at`."""
        fired_ms = applied_up_to(fired_at)
        span, n_changes, token = clock_state.read() or (NOTHING_WAITS, 0, None)
        waiting = self._take(shard, token, open_state, changes)
        due = waiting.due(fired_ms)
        ends = [waiting.deadlines[0][0], waiting.deadlines[-1][0]] if waiting.deadlines else []
        span = timers.rearm(ends, bool(due), fired, fired_ms, span[2])
        out = [value for deadline, entry_id, entry in due for value in self.expire(entry_id, entry, deadline)]
        self._write(shard, waiting, span, n_changes, clock_state, open_state, changes)
        yield from out

    def _take(self, shard, token, open_state, changes) -> Waiting:
        """The shard's live entries (taken out: put back only once the call has succeeded), or
        from state when this worker's are not the latest."""
        waiting = self._live.take(shard, token)
        if waiting is not None:
            return waiting
        waiting = Waiting()
        for entry_id, (packed, deadline) in read_entries(open_state, changes).items():
            waiting.entries[entry_id] = (self.unpack(packed), deadline)
            waiting.deadlines.append((deadline, entry_id))
        waiting.deadlines.sort()
        return waiting

    def _write(self, shard, waiting: Waiting, span, n_changes, clock_state, open_state, changes):
        """Writes what changed (all the entries instead, once `changes` is mostly superseded)."""
        if waiting.changed:
            changed = {i: change and (self.pack(change[0]), change[1]) for i, change in waiting.changed.items()}
            n_changes = write_entries(changed, n_changes, len(waiting.entries),
                                      lambda: {i: (self.pack(e), d) for i, (e, d) in waiting.entries.items()},
                                      open_state, changes)
            waiting.changed = {}
        waiting.token = secrets.randbits(63)
        clock_state.write((span, n_changes, waiting.token))
        self._live.keep(shard, waiting)
