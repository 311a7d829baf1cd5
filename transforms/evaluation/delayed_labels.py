"""Score served predictions once their delayed labels are learned.

With delayed labels a learner serves a prediction when the impression arrives (`predict`
mode) and learns the label when its window closes (`learn` mode). `ScoreDelayedLabels`
pairs the two by (model key, event id) and emits the served prediction with its `y_true`,
at the label's time and with the label's origin (so a source offset is committed only
after the model learned it and the scored prediction was delivered).
"""
from __future__ import annotations

import dataclasses

import apache_beam as beam
from apache_beam import coders
from apache_beam.transforms import userstate

from core.records import Example, Prediction
from transforms import coders as record_coders  # noqa: F401  (registers the record coders)
from transforms.runners import is_streaming


class ScoreDelayedLabels(beam.PTransform):
    """(served `Prediction`s, learned `Example`s) -> scored `Prediction`s."""

    def expand(self, pcolls):
        served, learned = pcolls
        both = ((served | "KeyServed" >> beam.Map(lambda p: ((p.model_key, p.event_id), p)),
                 learned | "KeyLearned" >> beam.Map(lambda e: ((e.model_key, e.event_id), e)))
                | "Both" >> beam.Flatten()
                | "InGlobalWindow" >> beam.WindowInto(beam.window.GlobalWindows()))
        if not is_streaming(served):  # bounded: one shuffle, no per-event state
            return both | "Group" >> beam.GroupByKey() | "PairAll" >> beam.FlatMap(_pair_all)
        return both | "Pair" >> beam.ParDo(_PairDoFn()).with_input_types(
            beam.typehints.KV[beam.typehints.Tuple[str, str], beam.typehints.Any])


class _PairDoFn(beam.DoFn):
    # One cell per event: the served prediction or the label, whichever came first.
    FIRST = userstate.ReadModifyWriteStateSpec("first", coders.FastPrimitivesCoder())

    def process(self, element, first=beam.DoFn.StateParam(FIRST)):
        _, record = element
        earlier = _decode(first.read())
        if earlier is None:
            first.write(_encode(record))
            return
        if type(earlier) is type(record):
            return  # a replayed copy of what is waiting: its pair is still to come
        first.clear()
        yield _scored(earlier, record)


def _pair_all(keyed):
    records = list(keyed[1])
    served = [r for r in records if isinstance(r, Prediction)]
    labels = [r for r in records if isinstance(r, Example)]
    if served and labels:
        yield _scored(served[0], labels[0])


def _scored(a, b):
    served, label = (a, b) if isinstance(a, Prediction) else (b, a)
    return beam.window.TimestampedValue(
        dataclasses.replace(served, y_true=label.y, origin=label.origin), label.event_time / 1000)


def _encode(record) -> tuple:
    return (type(record).__name__, tuple(getattr(record, f.name) for f in dataclasses.fields(record)))


def _decode(state):
    if state is None:
        return None
    kind, values = state
    return {"Prediction": Prediction, "Example": Example}[kind](*values)
