"""Online learning inside Beam: predict, emit the prediction, then learn — per model key.

`LearnOnline` keeps one river model per model key. Within a key, events are applied in
(event time, event id) order, so the result depends neither on bundling nor on batch vs
streaming:

- batch (bounded input): every event is known before any is applied, so the events are
  grouped (GroupByKey) in shards of model keys (`shard_of`: a key with two events does not
  cost a grouping of its own), and each key's events are applied in one sorted pass. No Beam
  state, no timers: the model lives only in that call (and in the store, if any);
- streaming: events wait in Beam state until the watermark passes them. An event-time timer
  at the earliest waiting event (`flush`) fires when the watermark passes it (just after: see
  `transforms.eventtime`); its timestamp holds the output watermark, so predictions keep their
  events' time. A second timer at the latest waiting event (`sweep`) applies a whole backlog in
  one firing once the watermark has passed it all (a replay, a file, a catch-up). A firing
  applies every waiting event at or before its own timestamp.

Either way, events reach the learner's grouping or state in chunks (`transforms.chunks`):
one element per key and bundle, not one per event.

Events that arrive after their key's model already applied later events cannot be applied in
order: they leave through the dead-letter output as `late` (a replay of an applied event is
one too); two copies of one event waiting together leave one prediction and one `duplicate`.
In streaming the model lives in Beam state as bytes (signed pickle, see `models.serde`: cheap
for Beam's state cache to size), written once per firing, so a retried bundle starts again
from the committed model and buffer: nothing is lost or learned twice. The live model object
of the last firing is kept in memory and reused only while state still holds the bytes it
was saved as.

Each event costs one `predict_proba_one` (a classifier's `y_pred` is its argmax, as river's
own `predict_one`; models that override `predict_one` still get it called) and one
`learn_one`. `mini_batch=N` is an opt-in, non-exact mode: see `LearnOnline`.

Beam state lives as long as the job. With a `store` (`models.snapshots`), each learner step
also saves the model and its predictions durably; a restarted job resumes from there, and an
event replayed from the source gets its stored prediction again instead of being relearned.
"""
from __future__ import annotations

import collections
import dataclasses
import itertools
import json
import zlib
from typing import NamedTuple

import apache_beam as beam
from apache_beam import coders
from apache_beam.options.pipeline_options import StandardOptions
from apache_beam.transforms import userstate
from apache_beam.transforms.timeutil import TimeDomain

from models import factory, serde, snapshots
from transforms import coders as record_coders
from transforms.chunks import ChunkPerKey, flatten
from transforms.eventtime import LEARNER_US, await_events, millis, rearm, stamp
from transforms.records import LEARN, PREDICT, DeadLetter, Example, Prediction

DEAD_LETTERS = "dead_letters"


LEARNED = "learned"
SHARDS = 256  # batch: groups of model keys, each applied by one call


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
        mini_batch: 0 (default) learns event by event, exactly as bare river's
            `predict_proba_one` + `learn_one`. N > 0 is the opt-in mini-batch mode: per key, up
            to N consecutive ready events (in event order) are predicted together with
            `predict_proba_many` (`predict_many` for regressors) and then learned together with
            `learn_many` on a pandas DataFrame. This is *not* the same as per-event learning:
            every event of a mini-batch is predicted by the model as it was before the
            mini-batch (`model_step` says which), and `learn_many` updates differ from N
            `learn_one` calls (one gradient step over the mini-batch, batch statistics). In
            streaming a mini-batch never spans two timer firings, so its boundaries (and the
            figures) may differ from a batch run over the same events. Only models whose every
            step has `learn_many` (and `transform_many` / `predict_proba_many`) qualify, e.g.
            `preprocessing.StandardScaler() | linear_model.LogisticRegression()`.
    """

    def __init__(self, model_spec: str | dict, signing_key: bytes | None = None, store: str | None = None,
                 replay_horizon_s: float = 24 * 3600, mini_batch: int = 0):
        super().__init__()
        if mini_batch < 0:
            raise ValueError(f"mini_batch must be >= 0, not {mini_batch}")
        for spec in (model_spec.values() if isinstance(model_spec, dict) else [model_spec]):
            model = factory.build(spec)  # fail at construction, not on a worker
            if mini_batch:
                check_mini_batch(model, spec)
        self.model_spec, self.store, self.replay_horizon_ms = model_spec, store, int(replay_horizon_s * 1000)
        self.mini_batch = mini_batch
        if signing_key is None:
            signing_key = serde.store_key(store) if store else serde.default_key()
        self.signing_key = signing_key

    def expand(self, examples):
        args = (self.model_spec, self.signing_key, self.store, self.replay_horizon_ms, self.mini_batch)
        if _streaming(examples):
            results = (examples
                       | "KeyByModel" >> beam.Map(lambda e: (e.model_key, e)).with_output_types(
                           beam.typehints.KV[str, Example])
                       | "Chunk" >> ChunkPerKey()
                       | "PredictThenLearn" >> beam.ParDo(_PredictThenLearnDoFn(*args)).with_outputs(
                           DEAD_LETTERS, LEARNED, main="predictions"))
        else:
            # Bounded input: every event of a key is known before any is applied, so one group
            # per key, sorted once, replaces state and timers (and Beam's state cache). Keys are
            # grouped in shards, so that a key with few events does not cost a grouping each.
            results = (examples
                       | "KeyByShard" >> beam.Map(lambda e: (shard_of(e.model_key), e)).with_output_types(
                           beam.typehints.KV[int, Example])
                       | "Chunk" >> ChunkPerKey()
                       | "GroupByShard" >> beam.GroupByKey()
                       | "PredictThenLearn" >> beam.ParDo(_ApplyShardDoFn(*args)).with_outputs(
                           DEAD_LETTERS, LEARNED, main="predictions"))
        return LearnerOutputs(results.predictions, results[DEAD_LETTERS], results[LEARNED])


def shard_of(model_key: str, shards: int = SHARDS) -> int:
    """The shard of a model key in batch runs: stable across processes and runs.

    >>> shard_of("default") == shard_of("default"), 0 <= shard_of("k7") < SHARDS
    (True, True)
    """
    return zlib.crc32(model_key.encode()) % shards


def check_mini_batch(model, spec="the model") -> None:
    """Raises ValueError unless `model` can learn and predict mini-batches of a DataFrame."""
    from river import compose

    steps = list(model.steps.values()) if isinstance(model, compose.Pipeline) else [model]
    final, transformers = steps[-1], steps[:-1]
    predict = "predict_many" if factory.task_of(model) == "regression" else "predict_proba_many"
    missing = [f"{type(s).__name__}.{m}" for s in transformers for m in ("learn_many", "transform_many")
               if not callable(getattr(s, m, None))]
    missing += [f"{type(final).__name__}.{m}" for m in ("learn_many", predict)
                if not callable(getattr(final, m, None))]
    if missing:
        raise ValueError(f"mini_batch needs a model that learns mini-batches, but {spec} lacks "
                         + ", ".join(missing) + "; use mini_batch=0 (per-event learning)")


class _Learner:
    """What both learner DoFns share: models per key, applying ready events in order, the store."""

    def __init__(self, model_spec: str | dict, signing_key: bytes, store: str | None = None,
                 replay_horizon_ms: int = 0, mini_batch: int = 0):
        self.model_spec = model_spec
        self.signing_key = signing_key
        self.store, self.replay_horizon_ms = store, replay_horizon_ms
        self.mini_batch = mini_batch

    def setup(self):
        specs = self.model_spec if isinstance(self.model_spec, dict) else {"*": self.model_spec}
        self._fresh = {k: factory.Fresh(s) for k, s in specs.items()}
        built = {k: fresh() for k, fresh in self._fresh.items()}  # (fails here, not per key)
        self._is_classifier = {k: factory.task_of(m) != "regression" for k, m in built.items()}
        # predict_one of a classifier that keeps river's default is the argmax of
        # predict_proba_one: take it from the one probability call instead of a second pass.
        self._argmax_ok = {k: _predicts_argmax(m) for k, m in built.items()}
        self._store = snapshots.open_store(self.store) if self.store else None

    def teardown(self):
        if self._store is not None:
            self._store.close()

    def _new_model(self, key: str):
        if key not in self._fresh and "*" not in self._fresh:
            raise ValueError(f"no model spec for model key {key!r} (and no '*' default)")
        return self._fresh.get(key, self._fresh.get("*"))()

    def _per_key(self, table: dict, key: str):
        return table.get(key, table.get("*"))

    def _apply(self, key, ready: list, model, step: int, clock):
        """Applies `ready` (any order) to `model` in event order; returns (dead letters and
        replays, predictions, learned examples, last applied order, step)."""
        ready.sort(key=Example.order)
        seen = [e for e in ready if clock is not None and e.order() <= tuple(clock)]
        out = list(self._replay_or_late(key, seen, clock and tuple(clock)))
        todo, last = [], None
        for example in ready[len(seen):]:
            order = (example.event_time, example.event_id)
            if order == last:
                out.append(_dead_letter(example, f"duplicate: event {example.event_id!r} seen twice"))
                continue
            last = order
            todo.append(example)
        if self.mini_batch:
            made, learned, step = self._apply_mini_batches(key, todo, model, step)
        else:
            made, learned, step = self._apply_each(key, todo, model, step)
        return out, made, learned, last, step

    def _apply_each(self, key, todo, model, step):
        is_classifier = self._per_key(self._is_classifier, key)
        argmax = self._per_key(self._argmax_ok, key)
        made, learned = [], []
        append, learn_one = made.append, model.learn_one
        for example in todo:
            mode, x, y = example.mode, example.x, example.y
            if mode != LEARN:
                if is_classifier:
                    proba = model.predict_proba_one(x)
                    y_pred = (max(proba, key=proba.get) if proba else None) if argmax else model.predict_one(x)
                else:
                    proba, y_pred = None, model.predict_one(x)
                append(Prediction(example.event_id, key, example.event_time, y, y_pred, proba, step,
                                  example.origin))
            if mode != PREDICT and y is not None:
                learn_one(x, y)
                step += 1
                if mode == LEARN:
                    learned.append(example)
        return made, learned, step

    def _apply_mini_batches(self, key, todo, model, step):
        import pandas as pd

        is_classifier = self._per_key(self._is_classifier, key)
        made, learned = [], []
        for i in range(0, len(todo), self.mini_batch):
            chunk = todo[i:i + self.mini_batch]
            asked = [e for e in chunk if e.mode != LEARN]
            if asked:
                X = pd.DataFrame([e.x for e in asked])
                if is_classifier:
                    probas = model.predict_proba_many(X)
                    classes = list(probas.columns)
                    rows = probas.to_numpy().tolist()
                    for e, row in zip(asked, rows):
                        proba = dict(zip(classes, row))
                        y_pred = max(proba, key=proba.get) if proba else None
                        made.append(Prediction(e.event_id, key, e.event_time, e.y, _plain(y_pred),
                                               {_plain(c): p for c, p in proba.items()}, step, e.origin))
                else:
                    for e, y_pred in zip(asked, model.predict_many(X).tolist()):
                        made.append(Prediction(e.event_id, key, e.event_time, e.y, y_pred, None, step,
                                               e.origin))
            taught = [e for e in chunk if e.mode != PREDICT and e.y is not None]
            if taught:
                model.learn_many(pd.DataFrame([e.x for e in taught]), pd.Series([e.y for e in taught]))
                step += len(taught)
                learned += [e for e in taught if e.mode == LEARN]
        return made, learned, step

    def _save(self, key, model, step, last, made, learned) -> bytes:
        blob = serde.dumps((model, step), self.signing_key)
        if self._store is not None:  # durable first: what leaves here is in the store
            self._store.save(key, blob, last, [
                (p.event_id, p.event_time, serde.dumps(dataclasses.replace(p, origin=()), self.signing_key))
                for p in made] + [(_learned_id(e), e.event_time, b"") for e in learned],
                keep_after_ms=last[0] - self.replay_horizon_ms)
        return blob

    @staticmethod
    def _emit(out, made, learned):
        yield from out
        for prediction in made:
            yield beam.window.TimestampedValue(prediction, stamp(prediction.event_time, LEARNER_US))
        for example in learned:
            yield beam.pvalue.TaggedOutput(LEARNED, beam.window.TimestampedValue(example, stamp(example.event_time, LEARNER_US)))

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


class _ApplyShardDoFn(_Learner, beam.DoFn):
    """Batch: all events of the model keys of one shard at once (after a GroupByKey); each
    key's events applied in one pass.

    No Beam state: a key's events are all there, so its model lives only in this call (and,
    with a store, is resumed from and saved to it, as in streaming).
    """

    def process(self, element):
        _, chunks = element
        by_key = collections.defaultdict(list)
        for example in flatten(chunks):
            by_key[example.model_key].append(example)
        for key in sorted(by_key):
            yield from self._apply_key(key, by_key[key])

    def _apply_key(self, key, ready):
        blob, clock = (self._store.load(key) or (None, None)) if self._store is not None else (None, None)
        model, step = (self._new_model(key), 0) if blob is None else serde.loads(
            blob, self.signing_key)
        out, made, learned, last, step = self._apply(key, ready, model, step, clock)
        if last is not None and self._store is not None:
            self._save(key, model, step, last, made, learned)
        return self._emit(out, made, learned)


class _PredictThenLearnDoFn(_Learner, beam.DoFn):
    """Streaming: events wait in state until the watermark passes them, then are applied.

    Two timers per key: `flush` at the earliest waiting event (it holds the output watermark
    there, so predictions keep their events' time) and `sweep` at the latest one. A firing
    applies every waiting event at or before its own timestamp. Live, `flush` fires event time
    by event time as the watermark advances; when the watermark has jumped past many waiting
    events (a backlog, a replayed file), `sweep` applies them all in one firing instead of one
    firing per event time.

    Two value cells per key: `clock` (the last applied event's order and the earliest and
    latest waiting event times, read for every incoming event, written by firings without being
    read) and `model` (the signed model bytes, the same clock and the events a firing left for
    later, read and written once per firing). With a single waiting event time only `flush` is
    set. Bytes are
    cheap for Beam's state cache to size; the live model of the last firing stays in memory and
    is reused while the state still holds the bytes it was saved as.
    """

    CLOCK = userstate.ReadModifyWriteStateSpec("clock", coders.FastPrimitivesCoder())
    PENDING = userstate.BagStateSpec("pending", record_coders.ExampleCoder())
    # The model blob and the events a firing leaves for later, in one cell: on Prism 2.77 a bag
    # cleared and refilled within a timer callback lost some elements and repeated others; the
    # bag is now only appended to (process) and cleared (timer).
    MODEL = userstate.ReadModifyWriteStateSpec("model", coders.FastPrimitivesCoder())
    FLUSH = userstate.TimerSpec("flush", TimeDomain.WATERMARK)
    SWEEP = userstate.TimerSpec("sweep", TimeDomain.WATERMARK)
    LIVE_MODELS = 10_000  # live models kept in memory (least recently used dropped)

    def setup(self):
        super().setup()
        self._live = collections.OrderedDict()  # key -> (blob it was written as, model, step)

    def process(self, element, clock_state=beam.DoFn.StateParam(CLOCK),
                pending=beam.DoFn.StateParam(PENDING),
                flush=beam.DoFn.TimerParam(FLUSH), sweep=beam.DoFn.TimerParam(SWEEP)):
        key, chunk = element
        applied_up_to, earliest, latest = clock_state.read() or (None, None, None)
        applied = tuple(applied_up_to) if applied_up_to is not None else None
        seen, times = [], []
        for example in chunk:
            if applied is not None and example.order() <= applied:
                seen.append(example)
            else:
                pending.add(example)
                times.append(example.event_time)
        if seen:
            yield from self._replay_or_late(key, seen, applied)
        if times:
            span = await_events(min(times), max(times), earliest, latest, flush, sweep, LEARNER_US)
            if span is not None:
                clock_state.write((applied_up_to, *span))

    @userstate.on_timer(FLUSH)
    def on_flush(self, key=beam.DoFn.KeyParam, fired_at=beam.DoFn.TimestampParam,
                 clock_state=beam.DoFn.StateParam(CLOCK), model_state=beam.DoFn.StateParam(MODEL),
                 pending=beam.DoFn.StateParam(PENDING),
                 flush=beam.DoFn.TimerParam(FLUSH), sweep=beam.DoFn.TimerParam(SWEEP)):
        yield from self.apply_ready_events(key, fired_at, clock_state, model_state, pending, flush, sweep,
                                           other=sweep)

    @userstate.on_timer(SWEEP)
    def on_sweep(self, key=beam.DoFn.KeyParam, fired_at=beam.DoFn.TimestampParam,
                 clock_state=beam.DoFn.StateParam(CLOCK), model_state=beam.DoFn.StateParam(MODEL),
                 pending=beam.DoFn.StateParam(PENDING),
                 flush=beam.DoFn.TimerParam(FLUSH), sweep=beam.DoFn.TimerParam(SWEEP)):
        yield from self.apply_ready_events(key, fired_at, clock_state, model_state, pending, flush, sweep,
                                           other=flush)

    def apply_ready_events(self, key, fired_at, clock_state, model_state, pending, flush, sweep, other):
        fired_ms = millis(fired_at)
        # The model cell keeps its own copy of the clock: a firing reads one cell, not two.
        blob, clock, left = model_state.read() or (None, None, ())
        ready, waiting = [], []
        for example in itertools.chain((Example(*fields) for fields in left), pending.read()):
            (ready if example.event_time <= fired_ms else waiting).append(example)
        pending.clear()
        earliest, latest = rearm([e.event_time for e in waiting], bool(ready), flush, sweep, other, LEARNER_US)
        waiting_fields = tuple(_fields(e) for e in waiting)
        if not ready:
            clock_state.write((clock, earliest, latest))
            if left or waiting:
                model_state.write((blob, clock, waiting_fields))
            return

        if blob is None and self._store is not None:  # a new job: resume from the snapshot
            blob, clock = self._store.load(key) or (None, None)
        live = self._live.pop(key, None)  # put back only once this firing has fully succeeded
        # Same bytes, same model: state read over the runner's API (Prism) is a fresh copy.
        if live is not None and blob is not None and live[0] == blob:
            model, step = live[1], live[2]
        else:
            model, step = (self._new_model(key), 0) if blob is None else serde.loads(
                blob, self.signing_key)
        out, made, learned, last, step = self._apply(key, ready, model, step, clock)
        if last is not None:
            blob, clock = self._save(key, model, step, last, made, learned), last
        model_state.write((blob, clock, waiting_fields))
        clock_state.write((clock, earliest, latest))
        if blob is not None:
            self._live[key] = (blob, model, step)
            if len(self._live) > self.LIVE_MODELS:
                self._live.popitem(last=False)
        yield from self._emit(out, made, learned)


def _predicts_argmax(model) -> bool:
    """Whether the classifier's predict_one is river's default: the argmax of predict_proba_one."""
    from river import base, compose

    final = list(model.steps.values())[-1] if isinstance(model, compose.Pipeline) else model
    return (isinstance(final, base.Classifier)
            and type(final).predict_one is base.Classifier.predict_one)


def _plain(value):
    """numpy scalars (from DataFrame columns) to Python ones, as per-event learning gives."""
    return value.item() if hasattr(value, "item") else value


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
