"""The learner on a stream: events wait in Beam state until the watermark passes them, then are
applied in order by `core.learning.Learner`.

Two timers per key (`transforms.eventtime.Timers`), each holding the output watermark at the
earliest waiting event (so predictions keep their events' time): `flush` just after the tick
of the earliest waiting event, `sweep` just after the tick of the latest one when it was set.
A firing applies every waiting event up to the end of the tick before it.

State per key: a bag of arrivals (`pending`, only appended to by `process`), a cell of the
events a compaction kept (`left`), the model (`model`: signed bytes and the clock, the order
of the last applied event) and `clock` (that order, the waiting span, the number of arrivals
in the bag and a token that changes with every write). An event in the bag at or before the
clock was applied (or refused) already: the bag is compacted into `left` only when such dead
events outnumber the waiting ones, so a firing does not rewrite the waiting events.

A firing must not read them either: on Prism each bag read comes over the runner's API and is
decoded whole (once per firing, it made the learner quadratic in the events waiting behind a
live stream). So each worker keeps, per key, the live model and the waiting events as of the
token it last wrote; a firing that finds the same token in `clock` uses them and reads neither
the bag nor the model bytes. Any other token (a retried bundle, another worker, a restart)
rebuilds them from state: nothing is lost or learned twice.
"""
from __future__ import annotations

import bisect
import dataclasses
import itertools
import operator
import secrets

import apache_beam as beam
from apache_beam import coders
from apache_beam.transforms import userstate
from apache_beam.transforms.timeutil import TimeDomain

from core.records import Example
from transforms import coders as record_coders
from transforms.eventtime import LEARNER_US, NOTHING_WAITS, TICK_MS, Timers, applied_up_to
from transforms.livecache import live_cache, new_owner
from transforms.learning.base import LearnerDoFn, emit, emit_replayed

_EVENT_TIME = operator.attrgetter("event_time")


@dataclasses.dataclass
class _Live:
    """What a worker keeps of a key between firings, valid while `clock` holds `token`."""
    token: int | None
    blob: bytes | None  # the model as saved
    clock: tuple | None  # the order of the last event it applied
    model: object
    step: int
    waiting: list  # the waiting Examples, by event time
    replay: bool = False  # resumed from a snapshot: waiting events it has seen are to be replayed


class PredictThenLearnDoFn(LearnerDoFn):
    """`(model key, [Example, ...])` chunks -> predictions, dead letters, learned examples."""

    # (applied order, waiting span (transforms.eventtime.Timers), arrivals in the bag, token)
    CLOCK = userstate.ReadModifyWriteStateSpec("clock", coders.FastPrimitivesCoder())
    PENDING = userstate.BagStateSpec("pending", record_coders.ExampleCoder())
    MODEL = userstate.ReadModifyWriteStateSpec("model", coders.FastPrimitivesCoder())  # (blob, clock)
    # Events a compaction of `pending` kept: on Prism 2.77 a bag cleared and refilled within a
    # timer callback lost some elements and repeated others, so the bag is only appended to
    # (process) and cleared (timers).
    LEFT = userstate.ReadModifyWriteStateSpec("left", coders.FastPrimitivesCoder())
    FLUSH = userstate.TimerSpec("flush", TimeDomain.WATERMARK)
    SWEEP = userstate.TimerSpec("sweep", TimeDomain.WATERMARK)
    LIVE_KEYS = 10_000  # keys whose live model and waiting events a worker keeps (least recent dropped)

    def __init__(self, learner, progress=None, tick_ms: int = TICK_MS):
        super().__init__(learner, progress)
        self.tick_ms, self._owner = tick_ms, new_owner()

    def setup(self):
        super().setup()
        self._live = live_cache(self._owner, self.LIVE_KEYS)

    def process(self, element, clock_state=beam.DoFn.StateParam(CLOCK),
                pending=beam.DoFn.StateParam(PENDING), flush=beam.DoFn.TimerParam(FLUSH), sweep=beam.DoFn.TimerParam(SWEEP)):
        key, chunk = element
        applied_up_to, span, in_bag, token = clock_state.read() or (None, NOTHING_WAITS, 0, None)
        applied = tuple(applied_up_to) if applied_up_to is not None else None
        seen, fresh = [], []
        for example in chunk:
            if applied is not None and example.order() <= applied:
                seen.append(example)
            else:
                pending.add(example)
                fresh.append(example)
        if seen:
            yield from emit_replayed(self.learner.replay_or_late(key, seen, applied))
        if fresh:
            times = [e.event_time for e in fresh]
            timers = Timers(flush, sweep, LEARNER_US, self.tick_ms)
            span = timers.awaiting(min(times), max(times), span) or span
            live = self._live.take(key, token)
            new_token = secrets.randbits(63)
            if live is not None:
                live.token = new_token
                fresh.sort(key=_EVENT_TIME)
                if live.waiting and fresh[0].event_time < live.waiting[-1].event_time:
                    live.waiting = sorted(live.waiting + fresh, key=_EVENT_TIME)  # rare: out of order
                else:
                    live.waiting.extend(fresh)
                self._live.keep(key, live)
            clock_state.write((applied_up_to, span, in_bag + len(fresh), new_token))

    @userstate.on_timer(FLUSH)
    def on_flush(self, key=beam.DoFn.KeyParam, fired_at=beam.DoFn.TimestampParam,
                 clock_state=beam.DoFn.StateParam(CLOCK), model_state=beam.DoFn.StateParam(MODEL),
                 pending=beam.DoFn.StateParam(PENDING), left=beam.DoFn.StateParam(LEFT),
                 flush=beam.DoFn.TimerParam(FLUSH),
                 sweep=beam.DoFn.TimerParam(SWEEP)):
        yield from self.apply_ready_events(key, fired_at, clock_state, model_state, pending, left,
                                           Timers(flush, sweep, LEARNER_US, self.tick_ms), "flush")

    @userstate.on_timer(SWEEP)
    def on_sweep(self, key=beam.DoFn.KeyParam, fired_at=beam.DoFn.TimestampParam,
                 clock_state=beam.DoFn.StateParam(CLOCK), model_state=beam.DoFn.StateParam(MODEL),
                 pending=beam.DoFn.StateParam(PENDING), left=beam.DoFn.StateParam(LEFT),
                 flush=beam.DoFn.TimerParam(FLUSH),
                 sweep=beam.DoFn.TimerParam(SWEEP)):
        yield from self.apply_ready_events(key, fired_at, clock_state, model_state, pending, left,
                                           Timers(flush, sweep, LEARNER_US, self.tick_ms), "sweep")

    def apply_ready_events(self, key, fired_at, clock_state, model_state, pending, left, timers, fired):
        """Applies the waiting events at or before `fired_at`."""
        fired_ms = applied_up_to(fired_at)
        _, span, in_bag, token = clock_state.read() or (None, NOTHING_WAITS, 0, None)
        live = self._live.take(key, token)  # kept again only once this firing has fully succeeded
        if live is None:
            live = self._from_state(key, model_state, pending, left)
        # `waiting` is sorted by event time: what is ready is a prefix.
        split = bisect.bisect_right(live.waiting, fired_ms, key=_EVENT_TIME)
        ready, waiting = live.waiting[:split], live.waiting[split:]
        if live.replay:  # a restart resumed a snapshot: what it has seen is replayed now, whatever its time
            ready += [e for e in waiting if e.order() <= tuple(live.clock)]
            waiting = [e for e in waiting if e.order() > tuple(live.clock)]
            live.replay = False
        ends = [waiting[0].event_time, waiting[-1].event_time] if waiting else []
        span = timers.rearm(ends, bool(ready), fired, fired_ms, span[2])
        if in_bag > 2 * len(waiting):  # the bag is mostly dead events: compact it
            pending.clear()
            if waiting:
                left.write(tuple(_fields(e) for e in waiting))
            else:
                left.clear()
            in_bag = 0
        if ready:
            out, made, learned, last, live.step = self.learner.apply(key, ready, live.model, live.step, live.clock)
            if last is not None:
                live.blob = self.learner.save(key, live.model, live.step, last, made, learned)
                live.clock = last
            model_state.write((live.blob, live.clock))  # what was ready is now at or before the clock
            # Due by the cadence, or now when nothing else waits (a stream that pauses or ends).
            self.learner.publish(key, live.model, live.step, live.clock, watermark_ms=fired_ms, final=not waiting)
        live.token, live.waiting = secrets.randbits(63), waiting
        clock_state.write((live.clock, span, in_bag, live.token))
        self._live.keep(key, live)
        if ready:
            yield from emit(out, made, learned)

    def _from_state(self, key, model_state, pending, left) -> _Live:
        """The key's model and waiting events, from state (and, for a new job, its snapshot).
        Events in the bag at or before the model's clock were applied: they are dead."""
        blob, clock = model_state.read() or (None, None)
        applied = tuple(clock) if clock is not None else None
        waiting = [e for e in itertools.chain((Example(*fields) for fields in left.read() or ()), pending.read())
                   if applied is None or e.order() > applied]
        waiting.sort(key=_EVENT_TIME)
        store, replay = self.learner.snapshots, False
        if blob is None and store is not None:  # a new job: resume from the snapshot
            blob, clock = store.load(key) or (None, None)
            replay = clock is not None
        model, step = self.learner.resume(key, blob)
        return _Live(None, blob, clock, model, step, waiting, replay)


def _fields(example: Example) -> tuple:
    return tuple(getattr(example, f.name) for f in dataclasses.fields(example))
