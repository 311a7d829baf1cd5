"""Point-in-time entity features over interactions, the same in batch and in streaming.

`AddEntityFeatures` keys the interactions by user, then by item, and keeps one profile per
key in Beam state (`transforms.profiles`). Within a key, events are applied in (event time,
event id) order once the watermark has passed them; an impression leaves with
`fields["features"]` computed from the events *strictly before* its event time: all
impressions at one instant are featurised before any event of that instant is applied. So a
feature never contains the outcome it will be used to predict, nor anything later.

An event older than what its profile has applied (it arrived behind the watermark) passes
on, an impression with the features known when it arrives, but is not applied to the
profile: the one place where a stream can differ from a batch run over the same records,
and only for such late records.

With a store, the same path serves events read again after
a restart: they get the features stored when they were first served, and are not applied
twice.

The features themselves are Beam-free (`core.features`, `core.profiles`); the backfill of a
store from history is `transforms.features.backfill`.
"""
from __future__ import annotations

import itertools
import json

import apache_beam as beam
from apache_beam import coders
from apache_beam.transforms import userstate
from apache_beam.transforms.timeutil import TimeDomain

from core.features import PROFILES, featurise, order, profile_key, with_features
from core.records import Row
from stores import snapshots
from transforms import coders as record_coders  # noqa: F401  (registers the record coders)
from transforms.eventtime import ITEM_FEATURES_US, NOTHING_WAITS, TICK_MS, USER_FEATURES_US, Timers, millis, stamp
from transforms.progress import add_progress
from transforms.runners import is_streaming

REPLAY_HORIZON_MS = 24 * 3600 * 1000  # how long served features stay stored for replays
# Timestamp offset of each kind's stage: see transforms.eventtime.
OFFSETS_US = {"user": USER_FEATURES_US, "item": ITEM_FEATURES_US}


class AddEntityFeatures(beam.PTransform):
    """Valid interaction `Row`s -> the same rows; impressions carry `fields["features"]`, the
    user, user x genre and item features as of just before the impression.

    Args:
        streaming: force the streaming (stateful) or batch (grouped) form; default: from the
            input and the pipeline options.
        store: location of a `models.snapshots` store (a SQLite path) for the profiles (streaming):
            each step saves the profile, its clock and the features it served, so a restarted
            job resumes the profiles, and an impression read again gets its features again.
    """

    def __init__(self, streaming: bool | None = None, store: str | None = None, progress: str | None = None):
        super().__init__()
        self.streaming, self.store, self.progress = streaming, store, progress

    def expand(self, rows):
        batch = not (is_streaming(rows) if self.streaming is None else self.streaming)
        for kind, (_, field) in PROFILES.items():
            keyed = rows | f"By{kind.title()}" >> beam.Map(lambda r, f=field: (r.fields[f], r)).with_output_types(
                beam.typehints.KV[str, Row])
            if batch:  # all of a key's events at once: one sorted pass, no state or timers
                rows = (keyed | f"Group{kind.title()}s" >> beam.GroupByKey()
                        | f"{kind.title()}Features" >> beam.FlatMap(_featurise_all, kind, self.progress))
            else:
                rows = keyed | f"{kind.title()}Features" >> beam.ParDo(_ProfileDoFn(kind, self.store, self.progress))
        return rows


class _ProfileDoFn(beam.DoFn):
    """A profile per key; rows wait in state until the watermark passes them, then are applied
    in order, with `flush`, `tick` and `sweep` timers as in the learner (`transforms.eventtime`; without
    `sweep`, a topic replayed on Flink went at about 6 rows/s).

    Arriving rows are appended to a bag (`pending`): an arrival writes one row, whatever waits.
    (They were kept in one cell, rewritten whole by every arrival: quadratic in the rows a key
    has waiting, a backlog's worth on a replay.) On Prism 2.77 a bag cleared and refilled in a
    timer callback lost some rows and repeated others (measured: 11 lost, 2 repeated of 1,038),
    so, as in the learner (`transforms.learning.streaming`), the bag is only appended to
    (`process`) and cleared (timers); the rows a firing leaves waiting go to a cell (`left`),
    written once per firing.
    """

    PROFILE = userstate.ReadModifyWriteStateSpec("profile", coders.FastPrimitivesCoder())
    PENDING = userstate.BagStateSpec("pending", record_coders.RowCoder())
    LEFT = userstate.ReadModifyWriteStateSpec("left", coders.FastPrimitivesCoder())  # packed rows
    # the waiting span (transforms.eventtime.Timers)
    PENDING_SPAN = userstate.ReadModifyWriteStateSpec("pending_span", coders.FastPrimitivesCoder())
    FLUSH = userstate.TimerSpec("flush", TimeDomain.WATERMARK)
    TICK = userstate.TimerSpec("tick", TimeDomain.WATERMARK)
    SWEEP = userstate.TimerSpec("sweep", TimeDomain.WATERMARK)

    def __init__(self, kind: str, store: str | None = None, progress: str | None = None, tick_ms: int = TICK_MS):
        self.kind, self.store, self.progress, self.tick_ms = kind, store, progress, tick_ms
        self.profile_type, self.offset_us = PROFILES[kind][0], OFFSETS_US[kind]

    def setup(self):
        self._store = snapshots.open_store(self.store) if self.store else None

    def teardown(self):
        if self._store is not None:
            self._store.close()

    def process(self, element, pending=beam.DoFn.StateParam(PENDING),
                pending_span=beam.DoFn.StateParam(PENDING_SPAN), flush=beam.DoFn.TimerParam(FLUSH),
                tick=beam.DoFn.TimerParam(TICK), sweep=beam.DoFn.TimerParam(SWEEP)):
        _, row = element
        pending.add(row)
        span = self._timers(flush, tick, sweep).awaiting(row.event_time, row.event_time,
                                                         pending_span.read() or NOTHING_WAITS)
        if span is not None:
            pending_span.write(span)

    @userstate.on_timer(FLUSH)
    def on_flush(self, key=beam.DoFn.KeyParam, fired_at=beam.DoFn.TimestampParam,
                 profile_state=beam.DoFn.StateParam(PROFILE), pending=beam.DoFn.StateParam(PENDING),
                 left=beam.DoFn.StateParam(LEFT), pending_span=beam.DoFn.StateParam(PENDING_SPAN),
                 flush=beam.DoFn.TimerParam(FLUSH), tick=beam.DoFn.TimerParam(TICK),
                 sweep=beam.DoFn.TimerParam(SWEEP)):
        yield from self.apply_ready_events(key, fired_at, profile_state, pending, left, pending_span,
                                           self._timers(flush, tick, sweep), "flush")

    @userstate.on_timer(TICK)
    def on_tick(self, key=beam.DoFn.KeyParam, fired_at=beam.DoFn.TimestampParam,
                profile_state=beam.DoFn.StateParam(PROFILE), pending=beam.DoFn.StateParam(PENDING),
                left=beam.DoFn.StateParam(LEFT), pending_span=beam.DoFn.StateParam(PENDING_SPAN),
                flush=beam.DoFn.TimerParam(FLUSH), tick=beam.DoFn.TimerParam(TICK),
                sweep=beam.DoFn.TimerParam(SWEEP)):
        yield from self.apply_ready_events(key, fired_at, profile_state, pending, left, pending_span,
                                           self._timers(flush, tick, sweep), "tick")

    @userstate.on_timer(SWEEP)
    def on_sweep(self, key=beam.DoFn.KeyParam, fired_at=beam.DoFn.TimestampParam,
                 profile_state=beam.DoFn.StateParam(PROFILE), pending=beam.DoFn.StateParam(PENDING),
                 left=beam.DoFn.StateParam(LEFT), pending_span=beam.DoFn.StateParam(PENDING_SPAN),
                 flush=beam.DoFn.TimerParam(FLUSH), tick=beam.DoFn.TimerParam(TICK),
                 sweep=beam.DoFn.TimerParam(SWEEP)):
        yield from self.apply_ready_events(key, fired_at, profile_state, pending, left, pending_span,
                                           self._timers(flush, tick, sweep), "sweep")

    def _timers(self, flush, tick, sweep) -> Timers:
        return Timers(flush, tick, sweep, self.offset_us, self.tick_ms)

    def apply_ready_events(self, key, fired_at, profile_state, pending, left, pending_span, timers, fired):
        """Applies the waiting rows at or before `fired_at`: `pending` is the bag of arrivals,
        `left` the cell of rows an earlier firing left waiting."""
        fired_ms = millis(fired_at)
        ready, waiting = [], []
        # Left rows first, then arrivals: the order the single cell kept them in.
        for row in itertools.chain(map(_unpack, left.read() or ()), pending.read()):
            (ready if row.event_time <= fired_ms else waiting).append(row)
        pending.clear()
        span = timers.rearm([r.event_time for r in waiting], bool(ready), fired, fired_ms,
                            (pending_span.read() or NOTHING_WAITS)[2])
        if waiting:
            left.write(tuple(map(_pack, waiting)))
            pending_span.write(span)
        else:
            left.clear()
            pending_span.clear()
        if not ready:
            return
        store_key = profile_key(self.kind, key)
        state, clock = profile_state.read() or (None, None)
        if state is None and self._store is not None:  # a new job: resume from the snapshot
            saved = self._store.load(store_key)
            if saved is not None:
                state, clock = json.loads(saved[0]), saved[1]
        profile = self.profile_type(state)
        ready.sort(key=order)
        replayed = [r for r in ready if clock is not None and order(r) <= tuple(clock)]
        yield from self._replay(store_key, replayed, profile)
        fresh = featurise(profile, ready[len(replayed):])
        if fresh:
            clock = order(ready[-1])
            if self._store is not None:  # durable first: what leaves here is in the store
                served = [(r.event_id, r.event_time, json.dumps(r.fields["features"]).encode())
                          for r in fresh if r.fields["event_type"] == "impression"]
                self._store.save(store_key, json.dumps(profile.state()).encode(), clock, served,
                                 keep_after_ms=clock[0] - REPLAY_HORIZON_MS)
            profile_state.write((profile.state(), clock))
        if self.progress:
            add_progress(self.progress, len(ready))
        for row in fresh:
            yield beam.window.TimestampedValue(row, stamp(row.event_time, self.offset_us))

    def _replay(self, store_key, rows, profile):
        """Rows the profile applied before (read again after a restart): passed on, not
        applied again; an impression with the features it was served then, if stored."""
        impressions = [r.event_id for r in rows if r.fields["event_type"] == "impression"]
        stored = self._store.predictions(store_key, impressions) if self._store and impressions else {}
        for row in rows:
            if row.event_id in stored:
                row = with_features(row, json.loads(stored[row.event_id]))
            elif row.fields["event_type"] == "impression":  # a late impression: what we know now
                row = with_features(row, profile.features(row.event_time, row.fields.get("item_genres") or ()))
            yield beam.window.TimestampedValue(row, stamp(row.event_time, self.offset_us))


def _pack(row: Row) -> tuple:
    return row.event_id, row.event_time, row.fields, tuple(row.origin)


def _unpack(packed) -> Row:
    return Row(*packed)


def _featurise_all(keyed_rows, kind: str, progress: str | None = None):
    profile_type, offset_us = PROFILES[kind][0], OFFSETS_US[kind]
    rows = featurise(profile_type(), sorted(keyed_rows[1], key=order))
    if progress:
        add_progress(progress, len(rows))
    for row in rows:
        yield beam.window.TimestampedValue(row, stamp(row.event_time, offset_us))
