"""The streaming feature stage: the profiles of a shard of entities in Beam state, applied in
event-time order as the watermark passes their events (`transforms.features.entity`).
"""
from __future__ import annotations

import bisect
import collections
import dataclasses
import itertools
import json
import operator
import secrets
import typing

import apache_beam as beam
from apache_beam import coders
from apache_beam.transforms import userstate
from apache_beam.transforms.timeutil import TimeDomain

from core.features import PROFILES, featurise, order, profile_key, with_features
from core.records import Row
from monitoring import taste
from stores import snapshots
from stores.online import open_online_store
from transforms import coders as record_coders  # noqa: F401  (registers the record coders)
from transforms.eventtime import (ITEM_FEATURES_US, NOTHING_WAITS, TASTE_MONITOR_US, TASTE_SIGNALS_US, TICK_MS,
                                  USER_FEATURES_US, Timers, applied_up_to, stamp)
from transforms.livecache import live_cache, new_owner
from transforms.progress import add_progress
from transforms.shards import read_entries, write_entries

REPLAY_HORIZON_MS = 24 * 3600 * 1000  # how long served features stay stored for replays


class Stage(typing.NamedTuple):
    """What a kind of profile stage keeps per entity, keyed by which field, at which timestamp
    offset (`transforms.eventtime`), and how it turns an entity's ready rows into its output."""
    profile_type: type
    field: str
    offset_us: int
    featurise: typing.Callable  # (profile, rows in order, alarm times) -> rows out


STAGES = {
    "user": Stage(*PROFILES["user"], USER_FEATURES_US, featurise),
    "item": Stage(*PROFILES["item"], ITEM_FEATURES_US, featurise),
    "taste": Stage(taste.TasteProfile, "user_id", TASTE_SIGNALS_US, taste.signals),
    # One entity: every signal row is a click (`transforms.features.taste`).
    "taste_monitor": Stage(taste.TasteMonitor, "event_type", TASTE_MONITOR_US, taste.raise_alarms),
}
OFFSETS_US = {kind: stage.offset_us for kind, stage in STAGES.items()}


@dataclasses.dataclass
class _Live:
    """What a worker keeps of a shard between firings, valid while its `clock` cell holds `token`."""
    token: int | None
    profiles: dict  # entity -> [profile, clock (the order of the last event it applied)]
    waiting: list  # the waiting rows, in (event time, event id) order


class ProfileShardDoFn(beam.DoFn):
    """The profiles of a shard of entities; rows wait in state until the watermark passes them,
    then are applied in order, each to its entity's profile, with the `flush` and `sweep`
    timers of the learner (`transforms.eventtime`; without `sweep`, a topic replayed on Flink
    went at about 6 rows/s).

    Keyed by entity, every row cost a timer firing and its state round trips: most of a
    stream's time in this stage. Keyed by shard, a firing serves all the shard's entities.

    State per shard, as in the learner (`transforms.learning.streaming`): arrivals are appended
    to a bag (`pending`), compacted into a cell (`left`) once mostly applied; the profiles are
    a cell (`profiles`, entity -> (state, clock)) rewritten only by a compaction, plus a bag of
    the profiles each firing changed (`changes`, `transforms.shards`), so a firing writes what it changed, not the
    shard. (On Prism 2.77 a bag cleared and refilled in one timer callback lost some rows and
    repeated others: bags here are only appended to, or cleared.) `clock` holds the waiting
    span, the entries in each bag and a token new at every write: a worker process keeps each
    shard's live profiles and waiting rows (`transforms.livecache`), and uses them while
    `clock` holds the token it last wrote.
    """

    # (waiting span (transforms.eventtime.Timers), rows in `pending`, entries in `changes`, token)
    CLOCK = userstate.ReadModifyWriteStateSpec("clock", coders.FastPrimitivesCoder())
    PENDING = userstate.BagStateSpec("pending", record_coders.RowCoder())
    LEFT = userstate.ReadModifyWriteStateSpec("left", coders.FastPrimitivesCoder())  # packed rows
    PROFILES = userstate.ReadModifyWriteStateSpec("profiles", coders.FastPrimitivesCoder())
    CHANGES = userstate.BagStateSpec("changes", coders.FastPrimitivesCoder())  # (entity, (state, clock))
    FLUSH = userstate.TimerSpec("flush", TimeDomain.WATERMARK)
    SWEEP = userstate.TimerSpec("sweep", TimeDomain.WATERMARK)
    LIVE_SHARDS = 1_000  # shards whose live profiles a worker keeps (least recent dropped)

    def __init__(self, kind: str, store: str | None = None, progress: str | None = None, tick_ms: int = TICK_MS,
                 online: str | None = None):
        self._owner = new_owner()
        self.kind, self.store, self.progress, self.tick_ms, self.online = kind, store, progress, tick_ms, online
        self.profile_type, self.field, self.offset_us, self.featurise = STAGES[kind]

    def setup(self):
        self._store = snapshots.open_store(self.store) if self.store else None
        self._online = open_online_store(self.online) if self.online else None
        self._live = live_cache(self._owner, self.LIVE_SHARDS)

    def teardown(self):
        for store in (self._store, self._online):
            if store is not None:
                store.close()

    def process(self, element, clock_state=beam.DoFn.StateParam(CLOCK), pending=beam.DoFn.StateParam(PENDING),
                left=beam.DoFn.StateParam(LEFT), profiles=beam.DoFn.StateParam(PROFILES),
                changes=beam.DoFn.StateParam(CHANGES), flush=beam.DoFn.TimerParam(FLUSH), sweep=beam.DoFn.TimerParam(SWEEP)):
        shard, rows = element
        span, in_bag, n_changes, token = clock_state.read() or (NOTHING_WAITS, 0, 0, None)
        live = self._live.take(shard, token)  # kept again only once this call has fully succeeded
        if live is None:
            live = self._from_state(pending, left, profiles, changes)
        fresh, behind = [], collections.defaultdict(list)
        for row in sorted(rows, key=order):
            entity = self._entity(row)
            profile, clock = self._profile(entity, live.profiles)
            if clock is not None and order(row) <= clock:  # applied already, or late: not applied
                if entity != taste.ALARMS:  # an alarm read again: applied once
                    behind[entity].append(row)
            else:
                pending.add(row)
                fresh.append(row)
        if fresh:
            span = self._timers(flush, sweep).awaiting(fresh[0].event_time, fresh[-1].event_time, span) or span
            if live.waiting and order(fresh[0]) < order(live.waiting[-1]):
                live.waiting = sorted(live.waiting + fresh, key=order)  # rare: out of order
            else:
                live.waiting.extend(fresh)
        live.token = secrets.randbits(63)
        clock_state.write((span, in_bag + len(fresh), n_changes, live.token))
        self._live.keep(shard, live)
        if self.progress and behind:
            add_progress(self.progress, sum(map(len, behind.values())))
        for entity, late in behind.items():
            for row in self._replay(profile_key(self.kind, entity), late, live.profiles[entity][0]):
                yield beam.window.TimestampedValue(row, stamp(row.event_time, self.offset_us))

    @userstate.on_timer(FLUSH)
    def on_flush(self, shard=beam.DoFn.KeyParam, fired_at=beam.DoFn.TimestampParam,
                 clock_state=beam.DoFn.StateParam(CLOCK), pending=beam.DoFn.StateParam(PENDING),
                 left=beam.DoFn.StateParam(LEFT), profiles=beam.DoFn.StateParam(PROFILES),
                 changes=beam.DoFn.StateParam(CHANGES), flush=beam.DoFn.TimerParam(FLUSH), sweep=beam.DoFn.TimerParam(SWEEP)):
        yield from self.apply_ready_rows(shard, fired_at, clock_state, pending, left, profiles, changes,
                                         self._timers(flush, sweep), "flush")

    @userstate.on_timer(SWEEP)
    def on_sweep(self, shard=beam.DoFn.KeyParam, fired_at=beam.DoFn.TimestampParam,
                 clock_state=beam.DoFn.StateParam(CLOCK), pending=beam.DoFn.StateParam(PENDING),
                 left=beam.DoFn.StateParam(LEFT), profiles=beam.DoFn.StateParam(PROFILES),
                 changes=beam.DoFn.StateParam(CHANGES), flush=beam.DoFn.TimerParam(FLUSH), sweep=beam.DoFn.TimerParam(SWEEP)):
        yield from self.apply_ready_rows(shard, fired_at, clock_state, pending, left, profiles, changes,
                                         self._timers(flush, sweep), "sweep")

    def _timers(self, flush, sweep) -> Timers:
        return Timers(flush, sweep, self.offset_us, self.tick_ms)

    def apply_ready_rows(self, shard, fired_at, clock_state, pending, left, profiles, changes, timers, fired):
        """Applies the waiting rows at or before `fired_at`, each to its entity's profile."""
        fired_ms = applied_up_to(fired_at)
        span, in_bag, n_changes, token = clock_state.read() or (NOTHING_WAITS, 0, 0, None)
        live = self._live.take(shard, token)  # kept again only once this firing has fully succeeded
        if live is None:
            live = self._from_state(pending, left, profiles, changes)
        # `waiting` is in event-time order: what is ready is a prefix.
        split = bisect.bisect_right(live.waiting, fired_ms, key=_EVENT_TIME)
        ready, waiting = live.waiting[:split], live.waiting[split:]
        ends = [waiting[0].event_time, waiting[-1].event_time] if waiting else []
        span = timers.rearm(ends, bool(ready), fired, fired_ms, span[2])
        if in_bag > 2 * len(waiting):  # the bag is mostly applied rows: compact it
            pending.clear()
            if waiting:
                left.write(tuple(map(_pack, waiting)))
            else:
                left.clear()
            in_bag = 0
        by_entity = collections.defaultdict(list)  # each entity's rows, in order
        for row in ready:
            by_entity[self._entity(row)].append(row)
        changed, out = [], []
        if taste.ALARMS in by_entity:  # taste alarms first: they apply to the rows after them
            self._apply(taste.ALARMS, by_entity.pop(taste.ALARMS), live.profiles, changed)
        # (From the snapshot store too: a job restarted on it applies the alarms it had seen.)
        alarms = self._profile(taste.ALARMS, live.profiles)[0].times if self.kind == "user" else ()
        for entity, rows in by_entity.items():
            out += self._apply(entity, rows, live.profiles, changed, alarms)
        if changed:
            states = {e: (live.profiles[e][0].state(), live.profiles[e][1]) for e in changed}
            n_changes = write_entries(
                states, n_changes, len(live.profiles),
                lambda: {e: (p.state(), c) for e, (p, c) in live.profiles.items() if c is not None},
                profiles, changes)
            if self._online is not None:  # published for the serving plane as they change
                self._online.put(self.kind, {e: (state, clock[0]) for e, (state, clock) in states.items()})
        live.token, live.waiting = secrets.randbits(63), waiting
        clock_state.write((span, in_bag, n_changes, live.token))
        self._live.keep(shard, live)
        if self.progress and ready:
            add_progress(self.progress, len(ready))
        for row in out:
            yield beam.window.TimestampedValue(row, stamp(row.event_time, self.offset_us))

    def _entity(self, row: Row):
        """The entity a row belongs to: a taste alarm (broadcast to every user shard) to `ALARMS`."""
        return taste.ALARMS if row.fields["event_type"] == taste.ALARM else row.fields[self.field]

    def _new(self, entity, state=None):
        return taste.AlarmTimes(state) if entity == taste.ALARMS else self.profile_type(state)

    def _apply(self, entity, rows, live_profiles, changed, alarms=()) -> list:
        """Applies one entity's ready `rows` (in order, all after its clock) to its profile;
        returns what it emits for them (a feature stage: the rows, impressions with their
        features; an alarm: nothing)."""
        profile, _ = self._profile(entity, live_profiles)
        if entity == taste.ALARMS:
            for row in rows:
                profile.apply(row.fields)
            fresh = []
        else:
            fresh = self.featurise(profile, rows, alarms)
        clock = order(rows[-1])
        if self._store is not None:  # durable first: what leaves here is in the store
            served = [(r.event_id, r.event_time, json.dumps(r.fields["features"]).encode())
                      for r in fresh if r.fields["event_type"] == "impression"]
            self._store.save(profile_key(self.kind, entity), json.dumps(profile.state()).encode(), clock, served,
                             keep_after_ms=clock[0] - REPLAY_HORIZON_MS)
        live_profiles[entity] = [profile, clock]
        changed.append(entity)
        return fresh

    def _profile(self, entity, live_profiles) -> list:
        """[profile, clock] of `entity`: live, else (a new job) from the snapshot, else new."""
        found = live_profiles.get(entity)
        if found is None:
            saved = self._store.load(profile_key(self.kind, entity)) if self._store is not None else None
            if saved is None:
                found = [self._new(entity), None]
            else:
                found = [self._new(entity, json.loads(saved[0])), tuple(saved[1])]
            live_profiles[entity] = found
        return found

    def _from_state(self, pending, left, profiles, changes) -> _Live:
        """A shard's profiles and waiting rows, from state. Rows in the bag that their entity's
        profile applied already are dead (they wait for a compaction)."""
        live = {e: [self._new(e, state), tuple(clock)]
                for e, (state, clock) in read_entries(profiles, changes).items()}
        waiting = []
        for row in itertools.chain(map(_unpack, left.read() or ()), pending.read()):
            _, clock = live.get(self._entity(row)) or (None, None)
            if clock is None or order(row) > clock:
                waiting.append(row)
        waiting.sort(key=order)
        return _Live(None, live, waiting)

    def _replay(self, store_key, rows, profile):
        """Rows the profile applied before (read again after a restart) or later than (late):
        passed on, not applied; an impression with the features it was served then, if stored,
        else those known now."""
        impressions = [r.event_id for r in rows if r.fields["event_type"] == "impression"]
        stored = self._store.predictions(store_key, impressions) if self._store and impressions else {}
        for row in rows:
            if row.event_id in stored:
                row = with_features(row, json.loads(stored[row.event_id]))
            elif row.fields["event_type"] == "impression":  # a late impression: what we know now
                row = with_features(row, profile.features(row.event_time, row.fields.get("item_genres") or ()))
            yield row


_EVENT_TIME = operator.attrgetter("event_time")


def _pack(row: Row) -> tuple:
    return row.event_id, row.event_time, row.fields, tuple(row.origin)


def _unpack(packed) -> Row:
    return Row(*packed)
