"""The learner on bounded input: every event of a key is known before any is applied, so the
events are sorted once, as an external sort does (`transforms.learning.runs`), and each key's
events applied in one ordered pass. No Beam state, no timers: a key's model lives only in that
pass (and, with a store, is resumed from and saved to it, as in streaming).

- `SpillRunDoFn`: each chunk of a bundle (up to `RUN` events of one shard of model keys,
  after a `Reshuffle` so that bundles are not one user's events) is sorted and written as a
  run file where it is; only `(shard, path)` goes on;
- a GroupByKey gathers each shard's paths: small, whatever the input's size;
- `ApplyShardDoFn` merges the shard's runs a frame at a time and applies each key's events in
  blocks of `BLOCK` events, saving to the store after each block;
- once every shard is applied, the runs are deleted. A job that fails leaves them behind (as
  Beam's file sinks leave their temporary files): `streamml-runs-*` under `--temp_location`.
  With a store, a key's model is saved after each block, so a failed shard's retry replays
  the blocks already saved (their stored predictions again, within the replay horizon).

Keys are grouped in shards (`shard_of`) so that a key with two events does not cost a
grouping of its own.
"""
from __future__ import annotations

import itertools
import operator
import os
import uuid
import zlib

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from core.learning import Learner
from core.records import Example
from models import serde
from transforms.chunks import ChunkPerKey
from transforms.learning.base import ALERTS, DEAD_LETTERS, LEARNED, LearnerDoFn, emit
from transforms.learning.runs import blocks, merge_runs, run_order, write_run
from transforms.tempfiles import delete_folder

SHARDS = 256  # groups of model keys, each applied by one call
RUN = 4096  # most events in one run (one chunk of a bundle)
BLOCK = 8192  # new events per key applied, and saved to a store, at once
APPLIED = "applied"


def shard_of(model_key: str, shards: int = SHARDS) -> int:
    """The shard of a model key in batch runs: stable across processes and runs.

    >>> shard_of("default") == shard_of("default"), 0 <= shard_of("k7") < SHARDS
    (True, True)
    """
    return zlib.crc32(model_key.encode()) % shards


class LearnBounded(beam.PTransform):
    """Examples -> predictions (main), dead letters, learned examples: `LearnOnline` in batch
    (and `applied`: each shard once applied, which the runs' deletion waits for).

    Args:
        learner: the `core.learning.Learner` to apply.
        progress: name of a progress counter to tick, or None.
        temp_dir: where the runs go (a directory every worker can read, e.g. the pipeline's
            `--temp_location`); a new directory under it holds this transform's runs.
        rebalance: reshuffle the examples first (all but the FnApiRunner: see `expand`).
    """

    def __init__(self, learner: Learner, progress: str | None, temp_dir: str, rebalance: bool = True):
        super().__init__()
        self.learner, self.progress, self.rebalance = learner, progress, rebalance
        # Named once, where the pipeline is built, so that every worker writes beside the others.
        self.runs_dir = FileSystems.join(temp_dir, f"streamml-runs-{uuid.uuid4().hex}")

    def expand(self, examples):
        keyed = examples | "KeyByShard" >> beam.Map(lambda e: (shard_of(e.model_key), e)).with_output_types(
            beam.typehints.KV[int, Example])
        if self.rebalance:
            # A fusion break, so that runs are as long as bundles allow: fused after a stateful
            # stage, a bundle is one key's events on Flink (a run per user). The FnApiRunner
            # gives a stage its whole input at once: there it only costs (main job 23 -> 18 s).
            keyed = keyed | "Rebalance" >> beam.Reshuffle()
        results = (keyed
                   | "Chunk" >> ChunkPerKey(max_size=RUN)
                   | "SpillRuns" >> beam.ParDo(SpillRunDoFn(self.learner.keys, self.runs_dir))
                   | "GroupByShard" >> beam.GroupByKey()
                   | "PredictThenLearn" >> beam.ParDo(ApplyShardDoFn(self.learner, self.progress, self.runs_dir)).with_outputs(
                       DEAD_LETTERS, LEARNED, ALERTS, APPLIED, main="predictions"))
        applied = results[APPLIED] | "AllWindows" >> beam.WindowInto(beam.window.GlobalWindows())
        _ = (examples.pipeline
             | "Once" >> beam.Create([None])
             | "DeleteRuns" >> beam.Map(_delete_runs, self.runs_dir, beam.pvalue.AsList(applied)))
        return results


class SpillRunDoFn(beam.DoFn):
    """`(shard, [Example, ...])` -> `(shard, path)`: the chunk sorted and written as a run."""

    def __init__(self, keys: serde.KeySource, runs_dir: str):
        self.keys, self.runs_dir = keys, runs_dir

    def setup(self):
        self._keys = serde.as_keyring(self.keys)
        if FileSystems.get_scheme(self.runs_dir) is None:  # a local path: for this user only
            os.makedirs(self.runs_dir, mode=0o700, exist_ok=True)

    def process(self, element):
        shard, examples = element
        path = FileSystems.join(self.runs_dir, f"run-{uuid.uuid4().hex}")
        write_run(path, sorted(examples, key=run_order), self._keys)
        yield shard, path


class ApplyShardDoFn(LearnerDoFn):
    """`(shard, [run path, ...])` -> predictions, dead letters, learned examples, and the shard
    once applied (tagged `applied`)."""

    def __init__(self, learner: Learner, progress: str | None, runs_dir: str):
        super().__init__(learner, progress)
        self.runs_dir = runs_dir

    def process(self, element):
        shard, paths = element
        runs = merge_runs(sorted(paths), self.learner.keyring, self.runs_dir)
        for key, events in itertools.groupby(runs, key=operator.attrgetter("model_key")):
            yield from self._apply_key(key, events)
        yield beam.pvalue.TaggedOutput(APPLIED, shard)

    def _apply_key(self, key, events):
        learner, store = self.learner, self.learner.snapshots
        blob, clock = (store.load(key) or (None, None)) if store is not None else (None, None)
        model, step = learner.resume(key, blob)
        # Mini-batches are cut within a block: keep them whole.
        size = max(BLOCK // learner.mini_batch, 1) * learner.mini_batch if learner.mini_batch else BLOCK
        for block in blocks(events, size, clock):
            out, made, learned, last, step = learner.apply(key, block, model, step, clock)
            if last is not None:
                clock = last
                if store is not None:
                    learner.save(key, model, step, last, made, learned)
            yield from emit(out, made, learned)
        learner.publish(key, model, step, clock, final=True)


def _delete_runs(_, runs_dir: str, applied: list):
    """Deletes the runs once every shard is applied (`applied` is only there to wait for)."""
    delete_folder(runs_dir)
