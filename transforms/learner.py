"""Online learning inside Beam: predict, emit the prediction, then learn — per model key.

`LearnOnline` holds one river model per model key in Beam state. Within a key, events are
applied in (event time, event id) order once the watermark has passed them, so the result
depends neither on bundling nor on batch vs streaming:

- an event-time timer at the earliest buffered event fires when the watermark passes it;
  its timestamp holds the output watermark, so predictions keep their events' timestamps;
- streaming: the firing applies the events up to the timer's timestamp, and sets the timer
  to the next buffered event (a bounded source may still advance the watermark step by step);
- batch: timers fire only once the input has ended (the watermark jumps to the end), so the
  first firing applies every buffered event in one sorted pass (one model read and write per
  key).

Events that arrive after their key's model already applied later events cannot be applied in
order: they leave through the dead-letter output as `late` (a replay of an applied event is
one too); two copies of one event waiting together leave one prediction and one `duplicate`. The model lives in Beam state (signed pickle, see `models.serde`), so a retried bundle
starts again from the committed model and buffer: nothing is lost or learned twice.
"""
from __future__ import annotations

import json
from typing import NamedTuple

import apache_beam as beam
from apache_beam import coders
from apache_beam.options.pipeline_options import StandardOptions
from apache_beam.transforms import userstate
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.utils.timestamp import Timestamp

from models import factory, serde
from transforms import coders as record_coders
from transforms.records import DeadLetter, Example, Prediction

DEAD_LETTERS = "dead_letters"


class LearnerOutputs(NamedTuple):
    predictions: beam.PCollection
    dead_letters: beam.PCollection


class LearnOnline(beam.PTransform):
    """Progressive (predict-then-learn) validation of a river model per `Example.model_key`.

    Args:
        model_spec: `MODULE:FUNCTION` returning a fresh river classifier or regressor.
        signing_key: HMAC key for model state; defaults to `models.serde.default_key()`.
    """

    def __init__(self, model_spec: str, signing_key: bytes | None = None):
        super().__init__()
        factory.build(model_spec)  # fail at construction, not on a worker
        self.model_spec = model_spec
        self.signing_key = signing_key if signing_key is not None else serde.default_key()

    def expand(self, examples):
        results = (
            examples
            | "KeyByModel" >> beam.Map(lambda e: (e.model_key, e)).with_output_types(
                beam.typehints.KV[str, Example])
            | "PredictThenLearn" >> beam.ParDo(
                _PredictThenLearnDoFn(self.model_spec, self.signing_key, batch=not _streaming(examples))
            ).with_outputs(DEAD_LETTERS, main="predictions")
        )
        return LearnerOutputs(results.predictions, results[DEAD_LETTERS])


class _PredictThenLearnDoFn(beam.DoFn):
    MODEL = userstate.ReadModifyWriteStateSpec("model", coders.BytesCoder())
    APPLIED = userstate.ReadModifyWriteStateSpec("applied_up_to", coders.TupleCoder(
        [coders.VarIntCoder(), coders.StrUtf8Coder()]))
    PENDING = userstate.BagStateSpec("pending", record_coders.ExampleCoder())
    PENDING_MIN = userstate.ReadModifyWriteStateSpec("pending_min", coders.VarIntCoder())
    FLUSH = userstate.TimerSpec("flush", TimeDomain.WATERMARK)

    def __init__(self, model_spec: str, signing_key: bytes, batch: bool):
        self.model_spec = model_spec
        self.signing_key = signing_key
        self.batch = batch

    def setup(self):
        self._is_classifier = factory.task_of(factory.build(self.model_spec)) != "regression"

    def process(self, element, applied=beam.DoFn.StateParam(APPLIED),
                pending=beam.DoFn.StateParam(PENDING),
                pending_min=beam.DoFn.StateParam(PENDING_MIN),
                flush=beam.DoFn.TimerParam(FLUSH)):
        _, example = element
        applied_up_to = applied.read()
        if applied_up_to is not None and example.order() <= tuple(applied_up_to):
            yield _dead_letter(example, f"late: model {example.model_key!r} already applied events "
                                        f"up to {tuple(applied_up_to)} (a late event or a replay)")
            return
        pending.add(example)
        earliest = pending_min.read()
        if earliest is None or example.event_time < earliest:
            pending_min.write(example.event_time)
            flush.set(Timestamp(micros=example.event_time * 1000))

    @userstate.on_timer(FLUSH)
    def apply_ready_events(self, key=beam.DoFn.KeyParam, fired_at=beam.DoFn.TimestampParam,
                           model_state=beam.DoFn.StateParam(MODEL),
                           applied=beam.DoFn.StateParam(APPLIED),
                           pending=beam.DoFn.StateParam(PENDING),
                           pending_min=beam.DoFn.StateParam(PENDING_MIN),
                           flush=beam.DoFn.TimerParam(FLUSH)):
        fired_ms = fired_at.micros // 1000
        ready, waiting = [], []
        for example in pending.read():
            (ready if self.batch or example.event_time <= fired_ms else waiting).append(example)
        pending.clear()
        for example in waiting:
            pending.add(example)
        if waiting:
            earliest = min(e.event_time for e in waiting)
            pending_min.write(earliest)
            flush.set(Timestamp(micros=earliest * 1000))
        else:
            pending_min.clear()
        if not ready:
            return

        blob = model_state.read()
        model, step = (factory.build(self.model_spec), 0) if blob is None else serde.loads(
            blob, self.signing_key)
        ready.sort(key=Example.order)
        last = None
        for example in ready:
            if example.order() == last:
                yield _dead_letter(example, f"duplicate: event {example.event_id!r} seen twice")
                continue
            last = example.order()
            yield beam.window.TimestampedValue(
                self._predict(model, example, key, step), example.event_time / 1000)
            if example.y is not None:
                model.learn_one(example.x, example.y)
                step += 1
        model_state.write(serde.dumps((model, step), self.signing_key))
        applied.write(last)

    def _predict(self, model, example: Example, key: str, step: int) -> Prediction:
        proba = model.predict_proba_one(example.x) if self._is_classifier else None
        return Prediction(event_id=example.event_id, model_key=key, event_time=example.event_time,
                          y_true=example.y, y_pred=model.predict_one(example.x), y_proba=proba,
                          model_step=step)


def _streaming(pcoll) -> bool:
    options = pcoll.pipeline.options
    return bool(options and options.view_as(StandardOptions).streaming) or not pcoll.is_bounded


def _dead_letter(example: Example, reason: str) -> beam.pvalue.TaggedOutput:
    payload = json.dumps({"event_id": example.event_id, "event_time": example.event_time,
                          "x": example.x, "y": example.y}, default=str).encode()
    return beam.pvalue.TaggedOutput(DEAD_LETTERS, DeadLetter(
        stage="LearnOnline", reason=reason, payload=payload, event_time=example.event_time))
