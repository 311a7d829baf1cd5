"""Training examples for offline training (`pipelines.train`), from either home of history (here,
not in `transforms`: they compose the sources, the features and the labelling, as a job does):

- `EventExamples`: raw interaction files, featured and labelled as the online job does them
  (point-in-time features, the attribution window): served (predict-only) examples at their
  impressions' times, labels when their windows close;
- `LakeExamples`: the lake's curated table (`pipelines.curate`), whose rows are those labels
  already, with the features served: the same `learn` examples, without recomputing anything.

`Passes` repeats the training labels for more than one pass over the training range, each pass
after the previous one in event time, so that the learner, which applies a key's examples in
event-time order, sees pass 1 whole, then pass 2, and so on.
"""
from __future__ import annotations

import dataclasses
from typing import NamedTuple

import apache_beam as beam

import schemas
from core.interactions import impression_features, served_example
from core.records import LEARN, Example
from transforms.features.entity import AddEntityFeatures
from transforms.io.files import ReadRows
from transforms.io.lake import CURATED, curated, partition
from transforms.recsys.labels import LabelImpressions
from transforms.recsys.validation import ValidateInteractions


class EventOutputs(NamedTuple):
    served: beam.PCollection  # predict-only examples, at their impressions' times
    labels: beam.PCollection  # learn examples, at their windows' close
    dead_letters: beam.PCollection


class EventExamples(beam.PTransform):
    def __init__(self, events: str, model_key: str, window_s: float):
        super().__init__()
        self.events, self.model_key, self.window_s = events, model_key, window_s

    def expand(self, pbegin):
        rows = pbegin | "ReadEvents" >> ReadRows(self.events, "avro", timestamp_field="event_time",
                                                 id_field="event_id", reader_schema=schemas.load("interaction"))
        validated = rows.rows | "Validate" >> ValidateInteractions()
        featured = validated.valid | "EntityFeatures" >> AddEntityFeatures()
        served = (featured | "Impressions" >> beam.Filter(lambda r: r.fields["event_type"] == "impression")
                  | "Serve" >> beam.Map(served_example, self.model_key))
        labelled = featured | "Label" >> LabelImpressions(self.window_s, self.model_key)
        dead_letters = ((rows.dead_letters, validated.dead_letters, labelled.dead_letters)
                        | "DeadLetters" >> beam.Flatten())
        return EventOutputs(served, labelled.examples, dead_letters)


class LakeExamples(beam.PTransform):
    """The curated labelled impressions of `dates` (Parquet) as `learn` examples at the time
    their labels became known, as `LabelImpressions` gives them."""

    def __init__(self, lake: str, dates: list[str], model_key: str):
        super().__init__()
        self.lake, self.dates, self.model_key = lake, dates, model_key

    def expand(self, pbegin):
        table = curated("parquet", CURATED)
        return (pbegin
                | "Partitions" >> beam.Create([f"{partition(self.lake, table, d)}/*.parquet" for d in self.dates])
                | "Read" >> beam.io.ReadAllFromParquet()
                | "AsExample" >> beam.Map(lake_example, self.model_key)
                | "Stamp" >> beam.Map(lambda e: beam.window.TimestampedValue(e, e.event_time / 1000)))


def lake_example(record: dict, model_key: str) -> Example:
    """The label of a curated impression: the features it was served with, its outcome."""
    x = impression_features({**record, "features": dict(record["features"] or ())})
    return Example(event_id=record["impression_id"], event_time=record["labelled_at"], x=x, y=bool(record["label"]),
                   model_key=model_key, mode=LEARN)


class Passes(beam.PTransform):
    """Training labels -> `passes` copies of them: pass p (from 0) `p * span` later in event time,
    where `span` runs from the earliest label to `end` (every label is before it), each copy
    with an id of its own (`<id>#pass<p+1>`, the learner would drop a repeated id)."""

    def __init__(self, passes: int, end_ms: int):
        super().__init__()
        if passes < 1:
            raise ValueError(f"passes must be >= 1, not {passes}")
        self.passes, self.end_ms = passes, end_ms

    def expand(self, labels):
        if self.passes == 1:
            return labels
        earliest = beam.pvalue.AsSingleton(labels | "Times" >> beam.Map(lambda e: e.event_time)
                                           | "Earliest" >> beam.CombineGlobally(lambda ts: min(ts, default=0)))
        return labels | "Repeat" >> beam.FlatMap(_repeat, self.passes, self.end_ms, earliest)


def _repeat(example: Example, passes: int, end_ms: int, earliest: int):
    span = end_ms - earliest
    for p in range(passes):
        again = example if p == 0 else dataclasses.replace(
            example, event_id=f"{example.event_id}#pass{p + 1}", event_time=example.event_time + p * span)
        yield beam.window.TimestampedValue(again, again.event_time / 1000)
