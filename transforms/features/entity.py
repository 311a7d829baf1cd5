"""Point-in-time entity features over interactions, the same in batch and in streaming.

`AddEntityFeatures` keys the interactions by user, then by item, and keeps one profile per
entity (`core.profiles`); on a stream in Beam state, many entities per key
(`transforms.features.streaming`, `transforms.shards`). Per entity, events are applied in
(event time, event id) order once the watermark has passed them; an impression leaves with
`fields["features"]` computed from the events *strictly before* its event time: all
impressions at one instant are featurised before any event of that instant is applied. So a
feature never contains the outcome it will be used to predict, nor anything later.

An event older than what its profile has applied (it arrived behind the watermark) passes
on at once, an impression with the features known when it arrives, but is not applied to the
profile: the one place where a stream can differ from a batch run over the same records,
and only for such late records.

With a store, the same path serves events read again after
a restart: they get the features stored when they were first served, and are not applied
twice.

The features themselves are Beam-free (`core.features`, `core.profiles`); the backfill of a
store from history is `transforms.features.backfill`.
"""
from __future__ import annotations

import apache_beam as beam

from core.features import PROFILES, featurise, order
from core.profiles import TASTE_ALARMS
from core.records import Row
from stores.online import open_online_store
from transforms.chunks import ChunkPerKey
from transforms.features.streaming import OFFSETS_US, ProfileShardDoFn
from transforms.eventtime import stamp
from transforms.progress import add_progress
from transforms.runners import is_streaming
from transforms.shards import SHARDS, shard_of


class AddEntityFeatures(beam.PTransform):
    """Valid interaction `Row`s -> the same rows; impressions carry `fields["features"]`, the
    user, user x genre and item features as of just before the impression.

    Args:
        streaming: force the streaming (stateful) or batch (grouped) form; default: from the
            input and the pipeline options.
        store: location of a `models.snapshots` store (a SQLite path) for the profiles (streaming):
            each step saves the profile, its clock and the features it served, so a restarted
            job resumes the profiles, and an impression read again gets its features again.
        online: location of a `stores.online` store to publish each entity's latest profile to,
            for the serving plane: in streaming as profiles change, in batch the final ones.
        shards: in streaming, the keys each stage spreads its entities over
            (`transforms.shards`). A key's firing applies the ready events of all its entities;
            each entity's profile still sees its own events in order, so results do not depend
            on it.
        taste_alarms: a PCollection of taste alarms (`transforms.features.taste.TasteAlarms`)
            to apply to the user profiles (`UserProfile.catch_up`): in batch a side input, in
            streaming sent to every user shard, applied as the watermark passes them.
    """

    def __init__(self, streaming: bool | None = None, store: str | None = None, progress: str | None = None,
                 shards: int = SHARDS, online: str | None = None, taste_alarms=None):
        super().__init__()
        if shards < 1:
            raise ValueError(f"shards must be >= 1, not {shards}")
        self.streaming, self.store, self.progress, self.shards = streaming, store, progress, shards
        self.online, self.taste_alarms = online, taste_alarms

    def expand(self, rows):
        p = rows.pipeline
        batch = not (is_streaming(rows) if self.streaming is None else self.streaming)
        for kind, (_, field) in PROFILES.items():
            name = kind.title()
            alarms = self.taste_alarms if kind == "user" else None
            if batch:  # all of an entity's events at once: one sorted pass, no state or timers
                times = [] if alarms is None else [beam.pvalue.AsList(
                    alarms | f"{name}AlarmTimes" >> beam.Map(lambda a: a.event_time))]
                if times and self.online:  # read by a server with each user's profile (core.requests)
                    _ = (p | f"{name}AlarmsToOnline" >> beam.Create([None])
                         | f"{name}PublishAlarms" >> beam.Map(_publish_alarms, times[0], self.online))
                rows = (rows
                        | f"By{name}" >> beam.Map(lambda r, f=field: (r.fields[f], r)).with_output_types(
                            beam.typehints.KV[str, Row])
                        | f"Group{name}s" >> beam.GroupByKey()
                        | f"{name}Features" >> beam.ParDo(_FeaturiseAllDoFn(kind, self.progress, self.online),
                                                          *times))
            else:
                keyed = rows | f"By{name}Shard" >> beam.Map(lambda r, f=field, n=self.shards: (
                    shard_of(r.fields[f], n), r)).with_output_types(beam.typehints.KV[int, Row])
                if alarms is not None:  # every shard applies every alarm
                    keyed = (keyed, alarms | f"{name}AlarmsToShards" >> beam.FlatMap(
                        lambda a, n=self.shards: [(shard, a) for shard in range(n)]).with_output_types(
                            beam.typehints.KV[int, Row])) | f"{name}RowsAndAlarms" >> beam.Flatten()
                rows = (keyed
                        | f"Chunk{name}s" >> ChunkPerKey()
                        | f"{name}Features" >> beam.ParDo(ProfileShardDoFn(kind, self.store, self.progress,
                                                                           online=self.online)))
        return rows


def _publish_alarms(_, times, online: str) -> None:
    if times:
        store = open_online_store(online)
        try:
            store.put("user", {TASTE_ALARMS: (sorted(times), max(times))})
        finally:
            store.close()


class _FeaturiseAllDoFn(beam.DoFn):
    """`(entity, rows)` -> the rows in order, impressions featurised; with `online`, the
    entity's final profile is published there."""

    def __init__(self, kind: str, progress: str | None = None, online: str | None = None):
        self.kind, self.progress, self.online = kind, progress, online

    def setup(self):
        self._online = open_online_store(self.online) if self.online else None

    def teardown(self):
        if self._online is not None:
            self._online.close()

    def process(self, keyed_rows, alarm_times=()):
        entity, rows = keyed_rows
        profile, offset_us = PROFILES[self.kind][0](), OFFSETS_US[self.kind]
        rows = featurise(profile, sorted(rows, key=order), sorted(alarm_times))
        if self._online is not None:
            self._online.put(self.kind, {entity: (profile.state(), rows[-1].event_time)})
        if self.progress:
            add_progress(self.progress, len(rows))
        for row in rows:
            yield beam.window.TimestampedValue(row, stamp(row.event_time, offset_us))
