"""Online learning inside Beam: predict, emit the prediction, then learn — per model key.

`LearnOnline` keeps one river model per model key. Within a key, events are applied in
(event time, event id) order, so the result depends neither on bundling nor on batch vs
streaming:

- batch (bounded input): every event is known before any is applied, so the events are
  sorted once, as an external sort does: chunks are sorted and written as run files (in the
  pipeline's `--temp_location`, else the system's temporary directory), the runs' paths are
  grouped in shards of model keys, and each key's events are merged from its runs and applied
  in one ordered pass (`transforms.learning.batch`). No Beam state, no timers, and no element
  that holds a key's history: the model lives only in that pass (and in the store, if any);
- streaming: events wait in Beam state until the watermark passes them, then are applied a
  tick of event time at a time (`tick_ms`, `transforms.eventtime`): a `flush` timer just after
  the earliest waiting event's tick applies that tick, holding the output watermark at that
  event, so predictions keep their events' time; a second timer, just after the latest
  waiting event's tick when it was set (`sweep`), applies a whole backlog in one firing once
  the watermark has passed it all (a replay, a file, a catch-up).

Either way, events reach the learner's runs or state in chunks (`transforms.chunks`): one
element per key and bundle, not one per event.

The two forms are `transforms.learning.batch` and `transforms.learning.streaming`; both apply a
key's ready events with the Beam-free `core.learning.Learner`. Events that arrive after their
key's model already applied later events cannot be applied in order: they leave through the
dead-letter output as `late` (a replay of an applied event is one too); two copies of one
event waiting together leave one prediction and one `duplicate`. In streaming the model lives
in Beam state as bytes (signed pickle, see `models.serde`), written once per firing.

Beam state lives as long as the job. With a `store` (`stores.snapshots`), each learner step
also saves the model and its predictions durably; a restarted job resumes from there, and an
event replayed from the source gets its stored prediction again instead of being relearned.

With a `registry` (`stores.registry`), the learner publishes signed versions of each key's
model for the serving plane (`core.publishing`): in streaming at a cadence while it learns and
whenever a key has nothing left waiting, in batch each key's final model.
"""
from __future__ import annotations

import os
import tempfile
from typing import NamedTuple

import apache_beam as beam
from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions

from core.learning import Learner, check_mini_batch
from core.publishing import Publisher
from core.records import Example
from models import factory, serde
from transforms.chunks import ChunkPerKey
from transforms.eventtime import TICK_MS
from transforms.learning.base import ALERTS, DEAD_LETTERS, LEARNED
from transforms.learning.batch import LearnBounded
from transforms.learning.streaming import PredictThenLearnDoFn
from transforms.runners import is_fn_api_runner, is_streaming


class LearnerOutputs(NamedTuple):
    predictions: beam.PCollection
    dead_letters: beam.PCollection
    learned: beam.PCollection  # the `learn`-mode examples, once learned (for ScoreDelayedLabels)
    alerts: beam.PCollection  # what the guards raised (`core.records.Alert`), one per incident


class LearnOnline(beam.PTransform):
    """Progressive (predict-then-learn) validation of a river model per `Example.model_key`.

    Examples in `predict` mode only get a prediction (y_true None) and `learn` mode ones are
    only learned (and leave through `learned`): a served prediction and its delayed label.

    Args:
        model_spec: `MODULE:FUNCTION` returning a fresh river classifier or regressor, or a
            dict of them per model key ("*" for any other key).
        key_file: a keyring file that signs and checks model state (`models.serde`: keys of
            32+ bytes separated by whitespace, the first signing); default the pipeline's
            `--state_key_file`, else $STREAMML_STATE_KEY, else with a store `<store>.key`
            beside it, else a random key per process. Only where to find the key travels in the
            pipeline: each worker reads it in the DoFn's setup (and this process once, to
            refuse a missing or weak key before the job starts).
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
        tick_ms: in streaming, the events of each tick of event time are applied together,
            once the watermark has passed the tick (see `transforms.eventtime`): a key keeps up
            with a stream as long as a firing takes less than a tick. Results do not depend on
            it; latency grows with it.
        progress: name of a progress counter (`transforms.progress`) to tick with the events
            applied, for a progress bar; None: none.
        registry: path of a `stores.registry` model registry (SQLite) to publish versions to,
            or None. They are signed with `key_file`'s keys, else $STREAMML_STATE_KEY, else the key
            file beside the registry (`<registry>.key`).
        publish_every_s, publish_every_events: the publishing cadence (`core.publishing`).
        guard: a `monitoring.guard.Guard` for every key's binary classifier, or a dict of them
            by key ("*": any other key): learning budgets, quarantine of suspicious sources,
            known-good versions (pinned in the registry) and rollback. A label it refuses leaves
            through the dead letters with the reason.
    """

    def __init__(self, model_spec: str | dict, key_file: str | None = None, store: str | None = None,
                 replay_horizon_s: float = 24 * 3600, mini_batch: int = 0, progress: str | None = None,
                 signing_key=None, tick_ms: int = TICK_MS, registry: str | None = None,
                 publish_every_s: float | None = 1.0, publish_every_events: int | None = None, guard=None):
        super().__init__()
        if signing_key is not None:
            raise TypeError("LearnOnline takes no signing_key (it would be pickled into the pipeline): "
                            "give key_file=, --state_key_file or $STREAMML_STATE_KEY")
        if tick_ms < 1:
            raise ValueError(f"tick_ms must be >= 1, not {tick_ms}")
        if mini_batch < 0:
            raise ValueError(f"mini_batch must be >= 0, not {mini_batch}")
        guards = guard if isinstance(guard, dict) else {} if guard is None else {"*": guard}
        if guards and mini_batch:
            raise ValueError("a guard screens each label before it is learned: it needs mini_batch=0")
        specs = model_spec if isinstance(model_spec, dict) else {"*": model_spec}
        for key, spec in specs.items():
            model = factory.build(spec)  # fail at construction, not on a worker
            if mini_batch:
                check_mini_batch(model, spec)
            if guards.get(key, guards.get("*")) is not None and factory.task_of(model) != "binary":
                raise ValueError(f"a guard tests labels against a click probability: {spec} is not a binary classifier")
        self.model_spec, self.store, self.replay_horizon_ms = model_spec, store, int(replay_horizon_s * 1000)
        self.mini_batch, self.progress, self.key_file, self.tick_ms = mini_batch, progress, key_file, tick_ms
        self.registry, self.publish_every, self.guard = registry, (publish_every_s, publish_every_events), guard
        if registry:
            Publisher(registry, every_s=publish_every_s, every_events=publish_every_events)  # a bad cadence fails here

    def expand(self, examples):
        key_file = self.key_file or examples.pipeline.options.view_as(StateKeyOptions).state_key_file
        keys = serde.KeySource(file=key_file and os.path.abspath(key_file), store=self.store)
        keys.resolve()  # a missing, unreadable or weak key fails here, not on a worker
        publisher = None
        if self.registry:
            # A file's path made absolute: workers in another process (Flink's pool) open it too.
            registry = self.registry if "://" in self.registry else os.path.abspath(self.registry)
            publisher = Publisher(registry, serde.KeySource(file=keys.file, store=registry), *self.publish_every)
            publisher.keys.resolve()
        learner = Learner(self.model_spec, keys, self.store, self.replay_horizon_ms, self.mini_batch, publisher,
                          self.guard)
        if is_streaming(examples):
            results = (examples
                       | "KeyByModel" >> beam.Map(lambda e: (e.model_key, e)).with_output_types(
                           beam.typehints.KV[str, Example])
                       | "Chunk" >> ChunkPerKey()
                       | "PredictThenLearn" >> beam.ParDo(PredictThenLearnDoFn(learner, self.progress, self.tick_ms)).with_outputs(
                           DEAD_LETTERS, LEARNED, ALERTS, main="predictions"))
        else:
            temp_dir = examples.pipeline.options.view_as(GoogleCloudOptions).temp_location or tempfile.gettempdir()
            results = examples | "Bounded" >> LearnBounded(learner, self.progress, temp_dir,
                                                            rebalance=not is_fn_api_runner(examples.pipeline.options))
        return LearnerOutputs(results.predictions, results[DEAD_LETTERS], results[LEARNED], results[ALERTS])


class StateKeyOptions(PipelineOptions):
    """`--state_key_file`: the default `key_file` of every `LearnOnline` in the pipeline."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument("--state_key_file", default=None,
                            help="Keyring file that signs model state (keys of 32+ bytes separated by "
                                 "whitespace, the first signing; see models.serde); default "
                                 "$STREAMML_STATE_KEY, else a key file beside the learner store.")
