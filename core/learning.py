"""The learner's core, without Beam: river models per model key, events applied in (event
time, event id) order, predict then learn, and the durable snapshot store.

Both of Beam's learner forms (`transforms.learning`: merged from sorted runs in blocks in
batch, state and timers in streaming) hand it a key's ready events and emit what it returns,
so batch and streaming apply the very same code. `Learner.apply` takes a key's ready events in any order
and returns, in order:

- `out`: what leaves before the new predictions, as (kind, record) pairs: an event at or before
  the model's clock gets its stored prediction again (`PREDICTION`) or is said learned again
  (`LEARNED`) when the store has it, else it is a `late` dead letter (`DEAD_LETTER`); a second
  copy of an event is a `duplicate` dead letter; a label a guard refused is a dead letter, and
  what the guard raised is an alert (`ALERT`: `core.records.Alert`);
- `made`: the predictions made, each *before* the model learned its event;
- `learned`: the `learn`-mode examples learned (a served prediction's delayed label).

Each event costs one `predict_proba_one` (a classifier's `y_pred` is its argmax, as river's
own `predict_one`; models that override `predict_one` still get it called) and one
`learn_one`; a learner that publishes also scores each label before learning it
(`core.progressive`: one more prediction per delayed label), and publishes those scores with
each version. `mini_batch=N` is an opt-in, non-exact mode: see `transforms.learning.LearnOnline`.

A learner given a guard (`monitoring.guard.Guard`, per key) asks it about each label before
learning it: a label it refuses leaves as a dead letter with the reason, and what it did (known-good
versions, rollbacks) reaches the registry through `core.lifecycle`, as do an operator's rollbacks
(adopted before a block is applied).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json

from core import lifecycle, progressive
from core.records import LEARN, PREDICT, DeadLetter, Example, Prediction
from core.publishing import Publisher
from models import factory, serde
from stores import snapshots

PREDICTION, LEARNED, DEAD_LETTER, ALERT = "prediction", "learned", "dead_letter", "alert"
TICK = 1024  # events between two progress reports


class Learner:
    """Models per key and the store; `open()` before use (on a worker), `close()` after.

    `keys` signs and checks model state: a `models.serde.KeySource` (where to find the keys,
    resolved by `open()`: a Learner inside a DoFn is pickled, the keys must not be) or, outside
    Beam, a `models.serde.Keyring`. `progress`, when set, is called with a count of events
    applied, every `TICK` events.
    """

    def __init__(self, model_spec: str | dict, keys: serde.KeySource | serde.Keyring, store: str | None = None,
                 replay_horizon_ms: int = 0, mini_batch: int = 0, publisher: Publisher | None = None,
                 guard=None):
        if guard and mini_batch:
            raise ValueError("a guard screens each label before it is learned: it needs mini_batch=0")
        self.model_spec = model_spec
        # A guard (`monitoring.guard.Guard`) for every key, or a dict of them by key ("*": any other).
        self.guards = guard if isinstance(guard, dict) else {} if guard is None else {"*": guard}
        self.keys = keys
        self.store, self.replay_horizon_ms = store, replay_horizon_ms
        self.mini_batch = mini_batch
        self.publisher = publisher
        self.progress = None

    def open(self):
        self._keys = serde.as_keyring(self.keys)
        specs = self.model_spec if isinstance(self.model_spec, dict) else {"*": self.model_spec}
        self._fresh = {k: factory.Fresh(s) for k, s in specs.items()}
        built = {k: fresh() for k, fresh in self._fresh.items()}  # (fails here, not per key)
        self._task = {k: factory.task_of(m) for k, m in built.items()}
        self._is_classifier = {k: task != "regression" for k, task in self._task.items()}
        # predict_one of a classifier that keeps river's default is the argmax of
        # predict_proba_one: take it from the one probability call instead of a second pass.
        self._argmax_ok = {k: predicts_argmax(m) for k, m in built.items()}
        self._store = snapshots.open_store(self.store) if self.store else None
        if self.publisher is not None:
            self.publisher.open()

    def close(self):
        if self._store is not None:
            self._store.close()
        if self.publisher is not None:
            self.publisher.close()

    def publish(self, key: str, model, step: int, clock, watermark_ms: int | None = None, final: bool = False):
        """Offers the key's model (`clock`: the order of its last event) to the publisher, if any."""
        if self.publisher is not None and clock is not None:
            guard = self._per_key(self.guards, key)
            metrics = progressive.summary(model)
            if guard is not None:
                metrics["guard"] = guard.summary(model)
            with guard.detached(model) if guard is not None else contextlib.nullcontext():
                self.publisher.offer(key, model, step, clock_ms=clock[0], watermark_ms=watermark_ms,
                                     metrics=metrics, final=final)

    @property
    def keyring(self) -> serde.Keyring:
        """The keys that sign and check state (once open)."""
        return self._keys

    @property
    def snapshots(self):
        """The open store, or None."""
        return self._store

    def new_model(self, key: str):
        if key not in self._fresh and "*" not in self._fresh:
            raise ValueError(f"no model spec for model key {key!r} (and no '*' default)")
        return self._fresh.get(key, self._fresh.get("*"))()

    def resume(self, key: str, blob: bytes | None):
        """(model, step) from signed bytes, or a fresh model at step 0."""
        return (self.new_model(key), 0) if blob is None else serde.loads(blob, self._keys)

    def _per_key(self, table: dict, key: str):
        return table.get(key, table.get("*"))

    def apply(self, key, ready: list, model, step: int, clock):
        """Applies `ready` (any order) to `model` in event order; returns (out, made, learned,
        last applied order, step): see the module's docstring."""
        ready.sort(key=Example.order)
        if self.publisher is not None:
            lifecycle.adopt_manual_rollback(self.publisher, key, model, self._per_key(self.guards, key))
        seen = [e for e in ready if clock is not None and e.order() <= tuple(clock)]
        out = list(self.replay_or_late(key, seen, clock and tuple(clock)))
        todo, last = [], None
        for example in ready[len(seen):]:
            order = (example.event_time, example.event_id)
            if order == last:
                out.append((DEAD_LETTER, dead_letter(example, f"duplicate: event {example.event_id!r} seen twice")))
                continue
            last = order
            todo.append(example)
        if self.mini_batch:
            made, learned, step = self._apply_mini_batches(key, todo, model, step)
        else:
            made, learned, step = self._apply_each(key, todo, model, step, out)
        guard = self._per_key(self.guards, key)
        if guard is not None:
            out += [(ALERT, alert) for alert in lifecycle.record(self.publisher, key, model, guard)]
        return out, made, learned, last, step

    def _apply_each(self, key, todo, model, step, out):
        is_classifier = self._per_key(self._is_classifier, key)
        argmax = self._per_key(self._argmax_ok, key)
        made, learned = [], []
        append, learn_one, progress = made.append, model.learn_one, self.progress
        guard = self._per_key(self.guards, key)
        scores = progressive.of(model, self._per_key(self._task, key)) if self.publisher is not None else None

        def predict(x):
            if is_classifier:
                proba = model.predict_proba_one(x)
                return proba, (max(proba, key=proba.get) if proba else None) if argmax else model.predict_one(x)
            return None, model.predict_one(x)

        for i, example in enumerate(todo, 1):
            if progress is not None and i % TICK == 0:
                progress(TICK)
            mode, x, y = example.mode, example.x, example.y
            if mode != LEARN:
                proba, y_pred = predict(x)
                append(Prediction(example.event_id, key, example.event_time, y, y_pred, proba, step,
                                  example.origin))
            if mode != PREDICT and y is not None:
                if scores is not None:  # test, then train
                    if mode == LEARN:  # a delayed label: what the model says of it now
                        proba, y_pred = predict(x)
                    scores.update(y, y_pred, proba, example.event_time)
                if guard is not None:
                    known = proba if scores is not None or mode != LEARN else None
                    refused = guard.screen(model, x, y, example.event_time, known)
                    if refused is not None:  # not learned, and kept for review
                        out.append((DEAD_LETTER, dead_letter(example, refused)))
                        continue
                learn_one(x, y)
                step += 1
                if guard is not None:
                    guard.learned(model, x, y, example.event_time)
                if mode == LEARN:
                    learned.append(example)
        if progress is not None and len(todo) % TICK:
            progress(len(todo) % TICK)
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
            if self.progress is not None:
                self.progress(len(chunk))
        return made, learned, step

    def save(self, key, model, step, last, made, learned) -> bytes:
        """The signed (model, step); with a store, saved there first with the predictions made."""
        blob = serde.dumps((model, step), self._keys)
        if self._store is not None:  # durable first: what leaves here is in the store
            self._store.save(key, blob, last, [
                (p.event_id, p.event_time, serde.dumps(dataclasses.replace(p, origin=()), self._keys))
                for p in made] + [(learned_id(e), e.event_time, b"") for e in learned],
                keep_after_ms=last[0] - self.replay_horizon_ms)
        return blob

    def replay_or_late(self, key, examples, clock):
        """Events at or before the model's clock: a stored prediction again, else `late`;
        (kind, record) pairs."""
        ids = [learned_id(e) if e.mode == LEARN else e.event_id for e in examples]
        stored = self._store.predictions(key, ids) if self._store and examples else {}
        for example, stored_id in zip(examples, ids):
            if stored_id in stored and example.mode == LEARN:  # learned before: say so again
                yield LEARNED, example
            elif stored_id in stored:
                prediction = serde.loads(stored[stored_id], self._keys)
                yield PREDICTION, dataclasses.replace(prediction, origin=example.origin)
            else:
                yield DEAD_LETTER, dead_letter(example, f"late: model {example.model_key!r} already applied "
                                                        f"events up to {clock} (a late event or a replay)")


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


def predicts_argmax(model) -> bool:
    """Whether the classifier's predict_one is river's default: the argmax of predict_proba_one."""
    from river import base, compose

    final = list(model.steps.values())[-1] if isinstance(model, compose.Pipeline) else model
    return (isinstance(final, base.Classifier)
            and type(final).predict_one is base.Classifier.predict_one)


def learned_id(example: Example) -> str:
    return f"{example.event_id}@learned"


def dead_letter(example: Example, reason: str) -> DeadLetter:
    payload = json.dumps({"event_id": example.event_id, "event_time": example.event_time,
                          "x": example.x, "y": example.y}, default=str).encode()
    return DeadLetter(stage="LearnOnline", reason=reason, payload=payload, event_time=example.event_time,
                      origin=example.origin, model_key=example.model_key)


def _plain(value):
    """numpy scalars (from DataFrame columns) to Python ones, as per-event learning gives."""
    return value.item() if hasattr(value, "item") else value
