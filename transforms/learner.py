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
one too); two copies of one event waiting together leave one prediction and one `duplicate`.
The model lives in Beam state (signed pickle, see `models.serde`), so a retried bundle
starts again from the committed model and buffer: nothing is lost or learned twice.

Beam state lives as long as the job. With a `store` (`models.snapshots`), each learner step
also saves the model and its predictions durably; a restarted job resumes from there, and an
event replayed from the source gets its stored prediction again instead of being relearned.
"""
from __future__ import annotations

import dataclasses
import json
from typing import NamedTuple

import apache_beam as beam
from apache_beam import coders
from apache_beam.options.pipeline_options import StandardOptions
from apache_beam.transforms import userstate
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.utils.timestamp import Timestamp

from models import factory, serde, snapshots
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
        signing_key: HMAC key for model state; defaults to `models.serde.default_key()`, or
            with a store to `models.serde.store_key(store)`.
        store: SQLite path of a `models.snapshots.SnapshotStore` that outlives the job.
        replay_horizon_s: event time for which the store keeps predictions to re-emit for
            replayed events; an older replay is a `late` dead letter.
    """

    def __init__(self, model_spec: str, signing_key: bytes | None = None, store: str | None = None,
                 replay_horizon_s: float = 24 * 3600):
        super().__init__()
        factory.build(model_spec)  # fail at construction, not on a worker
        self.model_spec, self.store, self.replay_horizon_ms = model_spec, store, int(replay_horizon_s * 1000)
        if signing_key is None:
            signing_key = serde.store_key(store) if store else serde.default_key()
        self.signing_key = signing_key

    def expand(self, examples):
        results = (
            examples
            | "KeyByModel" >> beam.Map(lambda e: (e.model_key, e)).with_output_types(
                beam.typehints.KV[str, Example])
            | "PredictThenLearn" >> beam.ParDo(_PredictThenLearnDoFn(
                self.model_spec, self.signing_key, batch=not _streaming(examples), store=self.store,
                replay_horizon_ms=self.replay_horizon_ms)).with_outputs(DEAD_LETTERS, main="predictions")
        )
        return LearnerOutputs(results.predictions, results[DEAD_LETTERS])


class _PredictThenLearnDoFn(beam.DoFn):
    MODEL = userstate.ReadModifyWriteStateSpec("model", coders.BytesCoder())
    APPLIED = userstate.ReadModifyWriteStateSpec("applied_up_to", coders.TupleCoder(
        [coders.VarIntCoder(), coders.StrUtf8Coder()]))
    PENDING = userstate.BagStateSpec("pending", record_coders.ExampleCoder())
    PENDING_MIN = userstate.ReadModifyWriteStateSpec("pending_min", coders.VarIntCoder())
    FLUSH = userstate.TimerSpec("flush", TimeDomain.WATERMARK)

    def __init__(self, model_spec: str, signing_key: bytes, batch: bool, store: str | None = None,
                 replay_horizon_ms: int = 0):
        self.model_spec = model_spec
        self.signing_key = signing_key
        self.batch = batch
        self.store, self.replay_horizon_ms = store, replay_horizon_ms

    def setup(self):
        self._is_classifier = factory.task_of(factory.build(self.model_spec)) != "regression"
        self._store = snapshots.SnapshotStore(self.store) if self.store else None

    def teardown(self):
        if self._store is not None:
            self._store.close()

    def process(self, element, applied=beam.DoFn.StateParam(APPLIED),
                pending=beam.DoFn.StateParam(PENDING),
                pending_min=beam.DoFn.StateParam(PENDING_MIN),
                flush=beam.DoFn.TimerParam(FLUSH)):
        key, example = element
        applied_up_to = applied.read()
        if applied_up_to is not None and example.order() <= tuple(applied_up_to):
            yield from self._replay_or_late(key, [example], tuple(applied_up_to))
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

        blob, clock = model_state.read(), applied.read()
        if blob is None and self._store is not None:  # a new job: resume from the snapshot
            blob, clock = self._store.load(key) or (None, None)
            if blob is not None:
                model_state.write(blob)
                applied.write(clock)
        model, step = (factory.build(self.model_spec), 0) if blob is None else serde.loads(
            blob, self.signing_key)
        ready.sort(key=Example.order)
        seen = [e for e in ready if clock is not None and e.order() <= tuple(clock)]
        out = list(self._replay_or_late(key, seen, clock and tuple(clock)))
        made, last = [], None
        for example in ready[len(seen):]:
            if example.order() == last:
                out.append(_dead_letter(example, f"duplicate: event {example.event_id!r} seen twice"))
                continue
            last = example.order()
            made.append(self._predict(model, example, key, step))
            if example.y is not None:
                model.learn_one(example.x, example.y)
                step += 1
        if made:
            blob = serde.dumps((model, step), self.signing_key)
            if self._store is not None:  # durable first: what leaves here is in the store
                self._store.save(key, blob, last, [
                    (p.event_id, p.event_time, serde.dumps(dataclasses.replace(p, origin=()), self.signing_key))
                    for p in made], keep_after_ms=last[0] - self.replay_horizon_ms)
            model_state.write(blob)
            applied.write(last)
        yield from out
        for prediction in made:
            yield beam.window.TimestampedValue(prediction, prediction.event_time / 1000)

    def _replay_or_late(self, key, examples, clock):
        """Events at or before the model's clock: a stored prediction again, else `late`."""
        stored = self._store.predictions(key, [e.event_id for e in examples]) if self._store and examples else {}
        for example in examples:
            if example.event_id in stored:
                prediction = serde.loads(stored[example.event_id], self.signing_key)
                yield beam.window.TimestampedValue(dataclasses.replace(prediction, origin=example.origin),
                                                   example.event_time / 1000)
            else:
                yield _dead_letter(example, f"late: model {example.model_key!r} already applied events "
                                            f"up to {clock} (a late event or a replay)")

    def _predict(self, model, example: Example, key: str, step: int) -> Prediction:
        proba = model.predict_proba_one(example.x) if self._is_classifier else None
        return Prediction(event_id=example.event_id, model_key=key, event_time=example.event_time,
                          y_true=example.y, y_pred=model.predict_one(example.x), y_proba=proba,
                          model_step=step, origin=example.origin)


def _streaming(pcoll) -> bool:
    options = pcoll.pipeline.options
    return bool(options and options.view_as(StandardOptions).streaming) or not pcoll.is_bounded


def _dead_letter(example: Example, reason: str) -> beam.pvalue.TaggedOutput:
    payload = json.dumps({"event_id": example.event_id, "event_time": example.event_time,
                          "x": example.x, "y": example.y}, default=str).encode()
    return beam.pvalue.TaggedOutput(DEAD_LETTERS, DeadLetter(
        stage="LearnOnline", reason=reason, payload=payload, event_time=example.event_time,
        origin=example.origin))
