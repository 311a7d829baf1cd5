"""Score served predictions once their delayed labels are learned.

With delayed labels a learner serves a prediction when the impression arrives (`predict`
mode) and learns the label when its window closes (`learn` mode), `label_delay_s` later.
`ScoreDelayedLabels` pairs the two by (model key, event id) and emits the served prediction
with its `y_true`, at the label's time and with the label's origin (so a source offset is
committed only after the model learned it and the scored prediction was delivered).

Either side may never come: the learner turns a late event into a `late` dead letter, so a
served prediction can miss its label or a learned label its prediction. In streaming each one
waits for its partner on an event-time timer, until the watermark shows the partner cannot
come any more (past the label's time); then it leaves through `unpaired`, counted, and its
origin can be committed. Nothing waits forever, and no partition's offsets stall behind it.
"""
from __future__ import annotations

import dataclasses
from typing import NamedTuple

import apache_beam as beam
from apache_beam.metrics import Metrics

from core.records import Example, Prediction
from transforms import coders as record_coders  # noqa: F401  (registers the record coders)
from transforms.deadlines import ShardDeadlinesDoFn
from transforms.eventtime import stamp
from transforms.runners import is_streaming
from transforms.shards import SHARDS, shard_of

UNPAIRED = "unpaired"


class ScoredOutputs(NamedTuple):
    scored: beam.PCollection  # served predictions with their y_true
    unpaired: beam.PCollection  # a Prediction without its label, or a learned Example without its prediction


class ScoreDelayedLabels(beam.PTransform):
    """(served `Prediction`s, learned `Example`s) -> scored `Prediction`s and the unpaired.

    Args:
        label_delay_s: how long after its prediction's event a label comes (an example's
            label time is its prediction's time plus this): a prediction waits that long.
        shards: in streaming, the keys the pairs are spread over (`transforms.shards`).
    """

    def __init__(self, label_delay_s: float, shards: int = SHARDS):
        super().__init__()
        if label_delay_s < 0:
            raise ValueError("the label delay cannot be negative")
        if shards < 1:
            raise ValueError(f"shards must be >= 1, not {shards}")
        self.label_delay_ms, self.shards = int(label_delay_s * 1000), shards

    def expand(self, pcolls):
        served, learned = pcolls
        both = ((served | "KeyServed" >> beam.Map(lambda p: ((p.model_key, p.event_id), p)),
                 learned | "KeyLearned" >> beam.Map(lambda e: ((e.model_key, e.event_id), e)))
                | "Both" >> beam.Flatten()
                | "InGlobalWindow" >> beam.WindowInto(beam.window.GlobalWindows()))
        if not is_streaming(served):  # bounded: one shuffle, no per-event state
            results = (both | "Group" >> beam.GroupByKey()
                       | "PairAll" >> beam.FlatMap(_pair_all).with_outputs(UNPAIRED, main="scored"))
        else:
            results = (both
                       | "ByShard" >> beam.Map(lambda kv, n=self.shards: (shard_of("\0".join(kv[0]), n), kv))
                       | "Pair" >> beam.ParDo(_PairDoFn(self.label_delay_ms)).with_outputs(UNPAIRED, main="scored"))
        return ScoredOutputs(results.scored, results[UNPAIRED])


class _PairDoFn(ShardDeadlinesDoFn):
    """Per shard of (model key, event id)s (`transforms.deadlines`), the served prediction or
    the label, whichever came first, until its partner comes or cannot come any more."""

    def __init__(self, label_delay_ms: int):
        super().__init__()
        self.label_delay_ms = label_delay_ms
        self.unpaired = Metrics.counter("ScoreDelayedLabels", "unpaired")

    def arrive(self, waiting, keyed):
        pair, record = keyed
        earlier = waiting.get(pair)
        if earlier is None:
            # Labels leave the learner stamped within their event-time millisecond (see
            # transforms.eventtime): once the watermark reaches the next one, every label up
            # to the time this record's label is due has arrived.
            label_time = record.event_time + (self.label_delay_ms if isinstance(record, Prediction) else 0)
            waiting.put(pair, record, label_time + 1)
        elif type(earlier) is not type(record):  # (the same type: a replayed copy of what waits)
            waiting.drop(pair)
            yield _scored(earlier, record)

    def expire(self, pair, record, deadline):
        self.unpaired.inc()
        yield beam.pvalue.TaggedOutput(UNPAIRED, beam.window.TimestampedValue(record, stamp(deadline)))

    def pack(self, record):
        return _encode(record)

    def unpack(self, packed):
        return _decode(packed)


def _pair_all(keyed):
    records = list(keyed[1])
    served = [r for r in records if isinstance(r, Prediction)]
    labels = [r for r in records if isinstance(r, Example)]
    if served and labels:
        yield _scored(served[0], labels[0])
    else:
        yield beam.pvalue.TaggedOutput(UNPAIRED, (served or labels)[0])


def _scored(a, b):
    served, label = (a, b) if isinstance(a, Prediction) else (b, a)
    return beam.window.TimestampedValue(
        dataclasses.replace(served, y_true=label.y, origin=label.origin), label.event_time / 1000)


def unpaired_kind(record) -> str:
    """'prediction' (its label never came) or 'label' (its prediction never came)."""
    return "prediction" if isinstance(record, Prediction) else "label"


def _encode(record) -> tuple:
    return (type(record).__name__, tuple(getattr(record, f.name) for f in dataclasses.fields(record)))


def _decode(state):
    if state is None:
        return None
    kind, values = state
    return {"Prediction": Prediction, "Example": Example}[kind](*values)
