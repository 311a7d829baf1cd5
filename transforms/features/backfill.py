"""The feature backfill as a transform: entity profiles from history up to a cut-off, into a
snapshot store.

`SnapshotProfiles` is the batch pass over history up to a cut-off, writing each profile and its
clock to a store (the same profile code as the streaming feature stage, in one sorted pass per
key). A streaming `AddEntityFeatures(store=...)` over the events from the cut-off on starts
from those profiles and computes the features a stream over the whole history would have.
"""
from __future__ import annotations

import json

import apache_beam as beam

from core.features import PROFILES, featurise, order, profile_key
from core.records import Row
from stores import snapshots
from transforms.features.streaming import REPLAY_HORIZON_MS


class SnapshotProfiles(beam.PTransform):
    """Valid interaction `Row`s -> the store keys written: every user and item profile as of
    `cutoff_ms` (events strictly before it applied, later ones ignored), with its clock, in the
    store at `store`.
    """

    def __init__(self, store: str, cutoff_ms: int):
        super().__init__()
        self.store, self.cutoff_ms = store, cutoff_ms

    def expand(self, rows):
        before = rows | "BeforeCutoff" >> beam.Filter(lambda r, cut=self.cutoff_ms: r.event_time < cut)
        profiles = []
        for kind, (_, field) in PROFILES.items():
            profiles.append(
                before
                | f"By{kind.title()}" >> beam.Map(lambda r, f=field: (r.fields[f], r)).with_output_types(
                    beam.typehints.KV[str, Row])
                | f"Group{kind.title()}s" >> beam.GroupByKey()
                | f"{kind.title()}Profiles" >> beam.MapTuple(_final_profile, kind))
        return profiles | "AllProfiles" >> beam.Flatten() | "Save" >> beam.ParDo(_SaveProfileDoFn(self.store))


def _final_profile(key, rows, kind=None):
    profile_type = PROFILES[kind][0]
    rows = sorted(rows, key=order)
    profile = profile_type()
    featurise(profile, rows)
    return profile_key(kind, key), json.dumps(profile.state()).encode(), order(rows[-1])


class _SaveProfileDoFn(beam.DoFn):
    def __init__(self, store: str):
        self.store = store

    def setup(self):
        self._store = snapshots.open_store(self.store)

    def teardown(self):
        self._store.close()

    def process(self, snapshot):
        key, blob, clock = snapshot
        self._store.save(key, blob, clock, [], keep_after_ms=clock[0] - REPLAY_HORIZON_MS)
        yield key
