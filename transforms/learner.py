"""Online learning inside Beam: predict, emit the prediction, then learn — per model key.

`LearnOnline` holds one river model per model key in Beam state. Within a key, events are
applied in (event time, event id) order once the watermark has passed them, so the result
depends neither on bundling nor on batch vs streaming:

- an event-time timer at the earliest buffered event fires when the watermark passes it
  (just after: see `transforms.eventtime`); its timestamp holds the output watermark, so
  predictions keep their events' time;
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
import itertools
import json
from typing import NamedTuple

import apache_beam as beam
from apache_beam import coders
from apache_beam.options.pipeline_options import StandardOptions
from apache_beam.transforms import userstate
from apache_beam.transforms.timeutil import TimeDomain

from models import factory, serde, snapshots
from transforms import coders as record_coders
from transforms.eventtime import LEARNER_US, millis, stamp
from transforms.records import LEARN, PREDICT, DeadLetter, Example, Prediction

DEAD_LETTERS = "dead_letters"


LEARNED = "learned"


class LearnerOutputs(NamedTuple):
    predictions: beam.PCollection
    dead_letters: beam.PCollection
    learned: beam.PCollection  # the `learn`-mode examples, once learned (for ScoreDelayedLabels)


class LearnOnline(beam.PTransform):
    """Progressive (predict-then-learn) validation of a river model per `Example.model_key`.

    Examples in `predict` mode only get a prediction (y_true None) and `learn` mode ones are
    only learned (and leave through `learned`): a served prediction and its delayed label.

    Args:
        model_spec: `MODULE:FUNCTION` returning a fresh river classifier or regressor, or a
            dict of them per model key ("*" for any other key).
        signing_key: HMAC key for model state; defaults to `models.serde.default_key()`, or
            with a store to `models.serde.store_key(store)`.
        store: location of a `models.snapshots` store (a SQLite path) that outlives the job.
        replay_horizon_s: event time for which the store keeps predictions to re-emit for
            replayed events; an older replay is a `late` dead letter.
    """

    def __init__(self, model_spec: str | dict, signing_key: bytes | None = None, store: str | None = None,
                 replay_horizon_s: float = 24 * 3600):
        super().__init__()
        for spec in (model_spec.values() if isinstance(model_spec, dict) else [model_spec]):
            factory.build(spec)  # fail at construction, not on a worker
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
                replay_horizon_ms=self.replay_horizon_ms)).with_outputs(DEAD_LETTERS, LEARNED, main="predictions")
        )
        return LearnerOutputs(results.predictions, results[DEAD_LETTERS], results[LEARNED])


class _PredictThenLearnDoFn(beam.DoFn):
    MODEL = userstate.ReadModifyWriteStateSpec("model", coders.BytesCoder())
    APPLIED = userstate.ReadModifyWriteStateSpec("applied_up_to", coders.TupleCoder(
        [coders.VarIntCoder(), coders.StrUtf8Coder()]))
    PENDING = userstate.BagStateSpec("pending", record_coders.ExampleCoder())
    # Events a firing leaves for later, in one cell: on Prism 2.77 a bag cleared and refilled
    # within a timer callback lost some elements and repeated others; the bag is now only
    # appended to (process) and cleared (timer).
    WAITING = userstate.ReadModifyWriteStateSpec("waiting", coders.FastPrimitivesCoder())
    PENDING_MIN = userstate.ReadModifyWriteStateSpec("pending_min", coders.VarIntCoder())
    FLUSH = userstate.TimerSpec("flush", TimeDomain.WATERMARK)

    def __init__(self, model_spec: str, signing_key: bytes, batch: bool, store: str | None = None,
                 replay_horizon_ms: int = 0):
        self.model_spec = model_spec
        self.signing_key = signing_key
        self.batch = batch
        self.store, self.replay_horizon_ms = store, replay_horizon_ms

    def setup(self):
        specs = self.model_spec if isinstance(self.model_spec, dict) else {"*": self.model_spec}
        self._specs = specs
        self._is_classifier = {k: factory.task_of(factory.build(s)) != "regression" for k, s in specs.items()}
        self._store = snapshots.open_store(self.store) if self.store else None

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
            flush.set(stamp(example.event_time, LEARNER_US))

    @userstate.on_timer(FLUSH)
    def apply_ready_events(self, key=beam.DoFn.KeyParam, fired_at=beam.DoFn.TimestampParam,
                           model_state=beam.DoFn.StateParam(MODEL),
                           applied=beam.DoFn.StateParam(APPLIED),
                           pending=beam.DoFn.StateParam(PENDING),
                           waiting_state=beam.DoFn.StateParam(WAITING),
                           pending_min=beam.DoFn.StateParam(PENDING_MIN),
                           flush=beam.DoFn.TimerParam(FLUSH)):
        fired_ms = millis(fired_at)
        ready, waiting = [], []
        left = [Example(*fields) for fields in waiting_state.read() or ()]
        for example in itertools.chain(left, pending.read()):
            (ready if self.batch or example.event_time <= fired_ms else waiting).append(example)
        pending.clear()
        if waiting:
            waiting_state.write(tuple(_fields(e) for e in waiting))
        elif left:
            waiting_state.clear()
        if waiting:
            earliest = min(e.event_time for e in waiting)
            pending_min.write(earliest)
            flush.set(stamp(earliest, LEARNER_US))
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
        model, step = (factory.build(self._spec(key)), 0) if blob is None else serde.loads(
            blob, self.signing_key)
        ready.sort(key=Example.order)
        seen = [e for e in ready if clock is not None and e.order() <= tuple(clock)]
        out = list(self._replay_or_late(key, seen, clock and tuple(clock)))
        made, learned, last = [], [], None
        for example in ready[len(seen):]:
            if example.order() == last:
                out.append(_dead_letter(example, f"duplicate: event {example.event_id!r} seen twice"))
                continue
            last = example.order()
            if example.mode != LEARN:
                made.append(self._predict(model, example, key, step))
            if example.mode != PREDICT and example.y is not None:
                model.learn_one(example.x, example.y)
                step += 1
                if example.mode == LEARN:
                    learned.append(example)
        if last is not None:
            blob = serde.dumps((model, step), self.signing_key)
            if self._store is not None:  # durable first: what leaves here is in the store
                self._store.save(key, blob, last, [
                    (p.event_id, p.event_time, serde.dumps(dataclasses.replace(p, origin=()), self.signing_key))
                    for p in made] + [(_learned_id(e), e.event_time, b"") for e in learned],
                    keep_after_ms=last[0] - self.replay_horizon_ms)
            model_state.write(blob)
            applied.write(last)
        yield from out
        for prediction in made:
            yield beam.window.TimestampedValue(prediction, stamp(prediction.event_time, LEARNER_US))
        for example in learned:
            yield beam.pvalue.TaggedOutput(LEARNED, beam.window.TimestampedValue(example, stamp(example.event_time, LEARNER_US)))

    def _spec(self, key: str) -> str:
        if key not in self._specs and "*" not in self._specs:
            raise ValueError(f"no model spec for model key {key!r} (and no '*' default)")
        return self._specs.get(key, self._specs.get("*"))

    def _replay_or_late(self, key, examples, clock):
        """Events at or before the model's clock: a stored prediction again, else `late`."""
        ids = [_learned_id(e) if e.mode == LEARN else e.event_id for e in examples]
        stored = self._store.predictions(key, ids) if self._store and examples else {}
        for example, stored_id in zip(examples, ids):
            if stored_id in stored and example.mode == LEARN:  # learned before: say so again
                yield beam.pvalue.TaggedOutput(LEARNED, beam.window.TimestampedValue(
                    example, stamp(example.event_time, LEARNER_US)))
            elif stored_id in stored:
                prediction = serde.loads(stored[stored_id], self.signing_key)
                yield beam.window.TimestampedValue(dataclasses.replace(prediction, origin=example.origin),
                                                   stamp(example.event_time, LEARNER_US))
            else:
                yield _dead_letter(example, f"late: model {example.model_key!r} already applied events "
                                            f"up to {clock} (a late event or a replay)")

    def _predict(self, model, example: Example, key: str, step: int) -> Prediction:
        is_classifier = self._is_classifier.get(key, self._is_classifier.get("*"))
        proba = model.predict_proba_one(example.x) if is_classifier else None
        return Prediction(event_id=example.event_id, model_key=key, event_time=example.event_time,
                          y_true=example.y, y_pred=model.predict_one(example.x), y_proba=proba,
                          model_step=step, origin=example.origin)


def _fields(example: Example) -> tuple:
    return tuple(getattr(example, f.name) for f in dataclasses.fields(example))


def _learned_id(example: Example) -> str:
    return f"{example.event_id}@learned"


def _streaming(pcoll) -> bool:
    options = pcoll.pipeline.options
    return bool(options and options.view_as(StandardOptions).streaming) or not pcoll.is_bounded


def _dead_letter(example: Example, reason: str) -> beam.pvalue.TaggedOutput:
    payload = json.dumps({"event_id": example.event_id, "event_time": example.event_time,
                          "x": example.x, "y": example.y}, default=str).encode()
    return beam.pvalue.TaggedOutput(DEAD_LETTERS, DeadLetter(
        stage="LearnOnline", reason=reason, payload=payload, event_time=example.event_time,
        origin=example.origin))
