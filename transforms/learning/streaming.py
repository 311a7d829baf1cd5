"""The learner on a stream: events wait in Beam state until the watermark passes them, then are
applied in order by `core.learning.Learner`.

Two timers per key: `flush` at the earliest waiting event (it holds the output watermark
there, so predictions keep their events' time) and `sweep` at the latest one. A firing applies
every waiting event at or before its own timestamp. Live, `flush` fires event time by event
time as the watermark advances; when the watermark has jumped past many waiting events (a
backlog, a replayed file), `sweep` applies them all in one firing instead of one firing per
event time.

Two value cells per key: `clock` (the last applied event's order and the earliest and latest
waiting event times, read for every incoming event, written by firings without being read)
and `model` (the signed model bytes, the same clock and the events a firing left for later,
read and written once per firing). With a single waiting event time only `flush` is set. Bytes
are cheap for Beam's state cache to size; the live model of the last firing stays in memory
and is reused while the state still holds the bytes it was saved as. A retried bundle starts
again from the committed model and buffer: nothing is lost or learned twice.
"""
from __future__ import annotations

import collections
import dataclasses
import itertools

import apache_beam as beam
from apache_beam import coders
from apache_beam.transforms import userstate
from apache_beam.transforms.timeutil import TimeDomain

from core.records import Example
from transforms import coders as record_coders
from transforms.eventtime import LEARNER_US, await_events, millis, rearm
from transforms.learning.base import LearnerDoFn, emit, emit_replayed


class PredictThenLearnDoFn(LearnerDoFn):
    """`(model key, [Example, ...])` chunks -> predictions, dead letters, learned examples."""

    CLOCK = userstate.ReadModifyWriteStateSpec("clock", coders.FastPrimitivesCoder())
    PENDING = userstate.BagStateSpec("pending", record_coders.ExampleCoder())
    # The model blob and the events a firing leaves for later, in one cell: on Prism 2.77 a bag
    # cleared and refilled within a timer callback lost some elements and repeated others; the
    # bag is now only appended to (process) and cleared (timer).
    MODEL = userstate.ReadModifyWriteStateSpec("model", coders.FastPrimitivesCoder())
    FLUSH = userstate.TimerSpec("flush", TimeDomain.WATERMARK)
    SWEEP = userstate.TimerSpec("sweep", TimeDomain.WATERMARK)
    LIVE_MODELS = 10_000  # live models kept in memory (least recently used dropped)

    def setup(self):
        super().setup()
        self._live = collections.OrderedDict()  # key -> (blob it was written as, model, step)

    def process(self, element, clock_state=beam.DoFn.StateParam(CLOCK),
                pending=beam.DoFn.StateParam(PENDING),
                flush=beam.DoFn.TimerParam(FLUSH), sweep=beam.DoFn.TimerParam(SWEEP)):
        key, chunk = element
        applied_up_to, earliest, latest = clock_state.read() or (None, None, None)
        applied = tuple(applied_up_to) if applied_up_to is not None else None
        seen, times = [], []
        for example in chunk:
            if applied is not None and example.order() <= applied:
                seen.append(example)
            else:
                pending.add(example)
                times.append(example.event_time)
        if seen:
            yield from emit_replayed(self.learner.replay_or_late(key, seen, applied))
        if times:
            span = await_events(min(times), max(times), earliest, latest, flush, sweep, LEARNER_US)
            if span is not None:
                clock_state.write((applied_up_to, *span))

    @userstate.on_timer(FLUSH)
    def on_flush(self, key=beam.DoFn.KeyParam, fired_at=beam.DoFn.TimestampParam,
                 clock_state=beam.DoFn.StateParam(CLOCK), model_state=beam.DoFn.StateParam(MODEL),
                 pending=beam.DoFn.StateParam(PENDING),
                 flush=beam.DoFn.TimerParam(FLUSH), sweep=beam.DoFn.TimerParam(SWEEP)):
        yield from self.apply_ready_events(key, fired_at, clock_state, model_state, pending, flush, sweep,
                                           other=sweep)

    @userstate.on_timer(SWEEP)
    def on_sweep(self, key=beam.DoFn.KeyParam, fired_at=beam.DoFn.TimestampParam,
                 clock_state=beam.DoFn.StateParam(CLOCK), model_state=beam.DoFn.StateParam(MODEL),
                 pending=beam.DoFn.StateParam(PENDING),
                 flush=beam.DoFn.TimerParam(FLUSH), sweep=beam.DoFn.TimerParam(SWEEP)):
        yield from self.apply_ready_events(key, fired_at, clock_state, model_state, pending, flush, sweep,
                                           other=flush)

    def apply_ready_events(self, key, fired_at, clock_state, model_state, pending, flush, sweep, other):
        fired_ms = millis(fired_at)
        # The model cell keeps its own copy of the clock: a firing reads one cell, not two.
        blob, clock, left = model_state.read() or (None, None, ())
        ready, waiting = [], []
        for example in itertools.chain((Example(*fields) for fields in left), pending.read()):
            (ready if example.event_time <= fired_ms else waiting).append(example)
        pending.clear()
        earliest, latest = rearm([e.event_time for e in waiting], bool(ready), flush, sweep, other, LEARNER_US)
        waiting_fields = tuple(_fields(e) for e in waiting)
        if not ready:
            clock_state.write((clock, earliest, latest))
            if left or waiting:
                model_state.write((blob, clock, waiting_fields))
            return

        learner, store = self.learner, self.learner.snapshots
        if blob is None and store is not None:  # a new job: resume from the snapshot
            blob, clock = store.load(key) or (None, None)
        live = self._live.pop(key, None)  # put back only once this firing has fully succeeded
        # Same bytes, same model: state read over the runner's API (Prism) is a fresh copy.
        if live is not None and blob is not None and live[0] == blob:
            model, step = live[1], live[2]
        else:
            model, step = learner.resume(key, blob)
        out, made, learned, last, step = learner.apply(key, ready, model, step, clock)
        if last is not None:
            blob, clock = learner.save(key, model, step, last, made, learned), last
        model_state.write((blob, clock, waiting_fields))
        clock_state.write((clock, earliest, latest))
        if blob is not None:
            self._live[key] = (blob, model, step)
            if len(self._live) > self.LIVE_MODELS:
                self._live.popitem(last=False)
        yield from emit(out, made, learned)


def _fields(example: Example) -> tuple:
    return tuple(getattr(example, f.name) for f in dataclasses.fields(example))
