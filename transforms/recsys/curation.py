"""The training set of record: each impression with the features it was served with, the
prediction served, and its label (`schemas/labelled_impression.avsc`).

The label is the learning plane's own (`LabelImpressions`: clicked or watched within the
attribution window), joined back to the impression's served fields. The features are those
the server logged with it (`served_features`); an impression no server logged them for (a
history file) gets the learning plane's point-in-time features instead, from the rows read.
So a model trained on the table sees what the online learner saw.
"""
from __future__ import annotations

from typing import NamedTuple

import apache_beam as beam

from core.records import Row
from transforms.recsys.labels import LabelImpressions

SERVED = ("item_genres", "position", "device", "model_key", "model_version", "propensity", "served_probability",
          "experiment", "variant", "bucket", "assignment_probability")


class CurationOutputs(NamedTuple):
    records: beam.PCollection  # labelled impression dicts
    dead_letters: beam.PCollection


class CurateImpressions(beam.PTransform):
    """Valid interaction rows with entity features (`AddEntityFeatures`) -> labelled impressions."""

    def __init__(self, window_s: float):
        super().__init__()
        self.window_s = window_s

    def expand(self, featured):
        labelled = featured | "Label" >> LabelImpressions(self.window_s)
        labels = labelled.examples | "LabelById" >> beam.Map(lambda e: (e.event_id, (e.y, e.event_time)))
        shown = (featured
                 | "Impressions" >> beam.Filter(lambda r: r.fields["event_type"] == "impression")
                 | "ShownById" >> beam.Map(lambda r: (r.event_id, r)))
        records = ({"shown": shown, "label": labels}
                   | "Join" >> beam.CoGroupByKey()
                   | "AsRecord" >> beam.FlatMap(_record))
        return CurationOutputs(records, labelled.dead_letters)


def _record(joined):
    impression_id, found = joined
    if not found["label"] or not found["shown"]:
        return  # no impression (its outcomes are dead letters of the labelling)
    (y, labelled_at), shown = found["label"][0], _first(found["shown"])
    fields = shown.fields
    served = fields.get("served_features")
    yield {"impression_id": impression_id, "event_time": shown.event_time, "user_id": fields["user_id"],
           "item_id": fields["item_id"], **{name: fields.get(name) for name in SERVED},
           "item_genres": list(fields.get("item_genres") or ()),
           "features": dict(served if served is not None else fields.get("features") or {}),
           "label": bool(y), "labelled_at": labelled_at}


def _first(rows: list[Row]) -> Row:
    """The copy of a duplicated impression the labelling kept (the others are its dead letters)."""
    return min(rows, key=lambda r: (r.event_time, repr(sorted(r.fields.items(), key=str))))
