"""The records that flow between the project's transforms.

They are frozen dataclasses; each one maps to an Avro schema in `schemas/` through `to_avro`.

`origin` names the source records a record stems from, as (topic, partition, first offset,
last offset) spans: a Kafka record's result carries it to the sink, and once the sink has
delivered the result, its spans may be committed (`transforms.kafka_offsets`). It is not
part of any Avro schema; records from files carry none.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

ALL_KEYS = "*"


@dataclasses.dataclass(frozen=True)
class Row:
    """One input record as a source read it: its fields, a stable id, its event time (ms)."""

    event_id: str
    event_time: int
    fields: dict
    origin: tuple = ()


PREDICT_AND_LEARN, PREDICT, LEARN = "both", "predict", "learn"


@dataclasses.dataclass(frozen=True)
class Example:
    """One event for a learner: features `x`, target `y` (None when unlabelled).

    `mode` says what the learner does with it: predict, then learn (the label is known at
    once); only predict (serve now, the label comes later); only learn (a delayed label, with
    the features as they were when the prediction was served).
    """

    event_id: str
    event_time: int  # epoch milliseconds
    x: dict
    y: Any = None
    model_key: str = "default"
    origin: tuple = ()
    mode: str = PREDICT_AND_LEARN
    served_by: str | None = None  # the model key that served the impression (None: not served, e.g. history)

    def order(self) -> tuple:
        """The order in which a learner applies events: event time, then event id."""
        return (self.event_time, self.event_id)


@dataclasses.dataclass(frozen=True)
class Prediction:
    """A prediction made for an event *before* the model learned from it."""

    event_id: str
    model_key: str
    event_time: int
    y_true: Any
    y_pred: Any
    y_proba: Optional[dict]
    model_step: int
    origin: tuple = ()

    def order(self) -> tuple:
        return (self.event_time, self.event_id, self.model_key)

    def to_avro(self) -> dict:
        d = _fields(self)
        d["y_true"] = _plain(self.y_true)
        d["y_pred"] = _plain(self.y_pred)
        if self.y_proba is not None:
            d["y_proba"] = {str(k): float(v) for k, v in self.y_proba.items()}
        return d


@dataclasses.dataclass(frozen=True)
class WindowedMetric:
    scope: str
    window_start: int
    window_end: int
    count: int
    metrics: dict

    def to_avro(self) -> dict:
        # Shallow (dataclasses.asdict deep-copies every value: ~0.3 ms a metric record).
        return {**_fields(self), "metrics": dict(self.metrics)}


@dataclasses.dataclass(frozen=True)
class DeadLetter:
    """A record that could not be processed: where, why, and its original bytes."""

    stage: str
    reason: str
    payload: bytes
    source: Optional[str] = None
    event_time: Optional[int] = None
    origin: tuple = ()
    model_key: Optional[str] = None  # the model that refused it; None: refused before the models

    def to_avro(self) -> dict:
        return _fields(self)


@dataclasses.dataclass(frozen=True)
class Alert:
    """An incident a learner's guard raised (`monitoring.guard`), one record per incident; or, with
    `signal` 'retrain', a request to retrain (quality decayed)."""

    signal: str  # "alert" or "retrain"
    kind: str  # poisoning, quarantine, quality or drift
    model_key: str
    event_time: Optional[int]
    reason: str
    version: Optional[int] = None
    origin: tuple = ()

    def to_avro(self) -> dict:
        return _fields(self)


def _fields(record) -> dict:
    """The record's schema fields: all but `origin`."""
    return {f.name: getattr(record, f.name) for f in dataclasses.fields(record) if f.name != "origin"}


def _plain(value):
    """numpy scalars and other number-likes to the Python types Avro unions accept."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "item"):
        return value.item()
    return str(value)
