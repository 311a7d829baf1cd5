"""Impressions labelled by their outcomes, within an attribution window of event time.

An impression is served a prediction when it arrives (`core.interactions.served_example`) and
labelled when its attribution window closes (an event-time timer): positive if a click or
watch for it arrived within the window, negative otherwise (a skip, or nothing). Every label thus comes
the same delay after its impression, so a window of labels is a fair sample of the
impressions shown one attribution window earlier. The label (`learn` mode) carries the
features the impression was served with and, as its event time, the moment the window closed.

With a store (`models.snapshots`), each label is saved, with the ids of the outcomes it
joined, before it leaves. A restarted job whose source replays records (their offsets were not
committed yet) then gives a replayed impression its stored label again, and a replayed outcome
whose impression was labelled by the earlier run the fate it had there, instead of calling it
an orphan because the join state died with the job.
"""
from __future__ import annotations

import json
from typing import NamedTuple

import apache_beam as beam
from apache_beam.utils.timestamp import Timestamp

from core.records import Row
from stores import snapshots
from transforms import coders as record_coders  # noqa: F401  (registers the record coders)
from transforms.deadlines import ShardDeadlinesDoFn
from transforms.progress import add_progress
from transforms.runners import is_streaming
from transforms.recsys.attribution import (DEAD_LETTERS, JOINED, LABEL_HORIZON_MS, LABELS, NO_IMPRESSION,  # noqa: F401
                                           Attribution, at, impression_of, label_json, replay)
from transforms.shards import SHARDS, shard_of

class LabelOutputs(NamedTuple):
    examples: beam.PCollection
    joined_outcomes: beam.PCollection
    dead_letters: beam.PCollection


class LabelImpressions(beam.PTransform):
    """Joins outcomes to their impression within `window_s` seconds of event time.

    Outputs labels, `learn`-mode `Example`s, when the window closes (y True for a click or
    watch within it, else False), the ids of outcomes folded into a label (`joined_outcomes`, for
    accounting), and dead letters: duplicate impressions, and outcomes with no impression in
    the window before them.

    On a stream each impression id keeps its records in state until an event-time timer closes
    its window (impression ids are spread over `shards` keys, `transforms.shards`); in batch
    (without a store) its records are grouped and joined in one pass, with the same logic
    (`Attribution`) and the same results.
    """

    def __init__(self, window_s: float, model_key: str = "default", store: str | None = None,
                 progress: str | None = None, shards: int = SHARDS):
        super().__init__()
        if window_s <= 0:
            raise ValueError("the attribution window must be positive")
        if shards < 1:
            raise ValueError(f"shards must be >= 1, not {shards}")
        self.shards = shards
        self.window_ms, self.model_key, self.store = int(window_s * 1000), model_key, store
        self.progress = progress  # a progress counter (transforms.progress) ticked per row joined

    def expand(self, rows):
        if is_streaming(rows) or self.store:
            keyed = rows | "KeyByShard" >> beam.Map(lambda r, n=self.shards: (
                shard_of(impression_of(r), n), r)).with_output_types(beam.typehints.KV[int, Row])
            join = beam.ParDo(_JoinDoFn(self.window_ms, self.model_key, self.store, self.progress))
        else:  # all of an impression's records at once: one grouping, no state or timers
            keyed = (rows
                     | "KeyByImpression" >> beam.Map(lambda r: (impression_of(r), r)).with_output_types(
                         beam.typehints.KV[str, Row])
                     | "Stamped" >> beam.ParDo(_WithTimestamp())
                     | "GroupByImpression" >> beam.GroupByKey())
            join = beam.ParDo(_JoinGroupDoFn(self.window_ms, self.model_key, self.progress))
        results = keyed | "Join" >> join.with_outputs(DEAD_LETTERS, JOINED, main="examples")
        return LabelOutputs(results.examples, results[JOINED], results[DEAD_LETTERS])


class _JoinDoFn(ShardDeadlinesDoFn):
    """The open attributions of a shard of impression ids (`transforms.deadlines`): a record
    joins its impression's attribution as it arrives; an attribution closes, giving its label
    and orphans, once the watermark passes the end of its window."""

    def __init__(self, window_ms: int, model_key: str, store: str | None = None, progress: str | None = None):
        super().__init__()
        self.window_ms, self.model_key, self.store, self.progress = window_ms, model_key, store, progress

    def setup(self):
        super().setup()
        self._store = snapshots.open_store(self.store) if self.store else None

    def teardown(self):
        if self._store is not None:
            self._store.close()

    def arrive(self, waiting, row):
        if self.progress:
            add_progress(self.progress, 1)
        impression_id = impression_of(row)
        join = waiting.get(impression_id)
        if join is None and self._store is not None:
            stored = self._store.predictions(LABELS, [impression_id]).get(impression_id)
            if stored is not None:  # labelled before (by an earlier run): the same fate again
                yield from replay(row, json.loads(stored))
                return
        join = join or Attribution(self.window_ms, self.model_key)
        yield from join.arrive(row)
        waiting.put(impression_id, join, join.closes_at)

    def expire(self, impression_id, join, closes_at):
        """The window closed: the label and the orphans leave, at the time it closed."""
        label, orphans = join.close(closes_at)
        if label is not None:
            if self._store is not None:  # durable first: what leaves here is in the store
                stored = json.dumps({"label": label_json(label), "joined": [i for i, _ in join.joined]})
                self._store.save(LABELS, b"", (label.event_time, label.event_id),
                                 [(label.event_id, label.event_time, stored.encode())],
                                 keep_after_ms=label.event_time - LABEL_HORIZON_MS)
            yield at(label, Timestamp(micros=closes_at * 1000))
        for orphan in orphans:
            yield at(orphan, Timestamp(micros=closes_at * 1000))

    def pack(self, join):
        return join.state(), join.closes_at

    def unpack(self, packed):
        state, closes_at = packed
        join = Attribution(self.window_ms, self.model_key, state)
        join.closes_at = closes_at
        return join


class _WithTimestamp(beam.DoFn):
    """`(key, value)` -> `(key, (timestamp, value))`: a grouping keeps no element's time."""

    def process(self, element, timestamp=beam.DoFn.TimestampParam):
        key, value = element
        yield key, (timestamp, value)


class _JoinGroupDoFn(beam.DoFn):
    """The batch form of `_JoinDoFn`: an impression id's records, all at once, arrive in (event
    time, event id) order, and their outputs carry the times the streaming form gives them (a
    record's own, and the window's close for what the close emits)."""

    def __init__(self, window_ms: int, model_key: str, progress: str | None = None):
        self.window_ms, self.model_key, self.progress = window_ms, model_key, progress

    def process(self, element):
        _, stamped = element
        stamped = sorted(stamped, key=lambda tv: (tv[1].event_time, tv[1].event_id))
        if self.progress:
            add_progress(self.progress, len(stamped))
        join = Attribution(self.window_ms, self.model_key)
        for timestamp, row in stamped:
            for out in join.arrive(row):
                yield at(out, timestamp)
        if join.closes_at is not None:
            closed_at = Timestamp(micros=join.closes_at * 1000)
            label, orphans = join.close(join.closes_at)
            for out in ([label] if label is not None else []) + orphans:
                yield at(out, closed_at)
