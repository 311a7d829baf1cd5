"""Sorted runs: the batch learner's input spilled to files, so that no worker, and no grouping,
holds a model key's whole history.

On bounded input the learner applies each model key's events in (event time, event id) order.
Grouping the events themselves hands a key's whole history to one worker as one element (Beam's
Flink runner even gathers it into one list in the JVM, apache/beam#18848), so memory grows with
the largest key. Instead, as an external sort does:

- each chunk of a bundle is sorted and written as a *run* (`write_run`) where it is, and only
  the run's path goes through the grouping;
- the learner merges a shard's runs lazily (`merge_runs`: one frame of each of at most
  `FAN_IN` runs in memory, in more passes if there are more runs) and applies each key's
  events in blocks of new events (`blocks`).

A run is a sequence of frames, each an 8-byte length and a signed pickle (`models.serde`) of up
to `FRAME` examples: the learner's keys sign them, and a frame is checked before it is
unpickled. Runs go through Beam's `FileSystems`: on several machines, a directory every worker
shares (a mounted volume, an object store).

>>> import os, tempfile
>>> from core.records import Example
>>> from models import serde
>>> keys = serde.keyring("k" * 32)
>>> def event(t, key="a"):
...     return Example(f"e{t}", t, {"x": float(t)}, True, model_key=key)
>>> d = tempfile.mkdtemp()
>>> write_run(os.path.join(d, "1"), sorted([event(3), event(1), event(2, "b")], key=run_order), keys)
>>> write_run(os.path.join(d, "2"), [event(2)], keys)
>>> [(e.model_key, e.event_time) for e in merge_runs([os.path.join(d, "1"), os.path.join(d, "2")], keys, d)]
[('a', 1), ('a', 2), ('a', 3), ('b', 2)]
"""
from __future__ import annotations

import heapq
import logging
import itertools
import uuid

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from models import serde

FRAME = 512  # examples in one signed frame: what a reader holds of each run
FAN_IN = 64  # runs read at once
MAX_FRAME_BYTES = 1 << 30  # a frame's length above this is a damaged run, not a frame to read
_LENGTH = 8


def run_order(example) -> tuple:
    """The order of a run: model key, then the learner's order (event time, event id)."""
    return (example.model_key, example.event_time, example.event_id)


def write_run(path: str, examples, keys: serde.Keyring) -> None:
    """Writes `examples` (an iterable, already in `run_order`) as a run at `path`."""
    examples = iter(examples)
    with FileSystems.create(path, "application/octet-stream", CompressionTypes.UNCOMPRESSED) as f:
        while frame := list(itertools.islice(examples, FRAME)):
            blob = serde.dumps(frame, keys)
            f.write(len(blob).to_bytes(_LENGTH, "big"))
            f.write(blob)


def read_run(path: str, keys: serde.Keyring):
    """The examples of the run at `path`, a frame at a time. The file is opened per frame, so
    that merging many runs does not keep as many files open."""
    offset = 0
    while True:
        with _open(path) as f:
            f.seek(offset)
            head = f.read(_LENGTH)
            if not head:
                return
            size = int.from_bytes(head, "big")
            blob = f.read(size) if len(head) == _LENGTH and 0 < size <= MAX_FRAME_BYTES else b""
        if len(blob) != size or not blob:
            raise IOError(f"{path}: a run of the batch learner ends inside a frame at byte {offset} "
                          "(truncated or overwritten while the job ran)")
        try:
            frame = serde.loads(blob, keys)
        except serde.TamperedState as e:
            raise serde.TamperedState(f"{path}: a run of the batch learner: {e}") from None
        offset += _LENGTH + size
        yield from frame


def _open(path):
    try:
        return FileSystems.open(path, "application/octet-stream", CompressionTypes.UNCOMPRESSED)
    except Exception as e:  # Beam's FileSystems wrap "not found" in BeamIOError
        raise IOError(f"{path}: a run of the batch learner cannot be opened ({e}); runs are written "
                      "where a bundle runs and read where its shard is applied, so on several "
                      "machines --temp_location must be storage every worker shares") from e


def merge_runs(paths: list, keys: serde.Keyring, work_dir: str):
    """The examples of several runs, in `run_order` (copies of one event: in no set order).

    At most `FAN_IN` runs are read at once: more are first merged `FAN_IN` at a time into
    bigger runs under `work_dir`, as many passes as needed (a runner with small bundles makes
    many small runs), and those are deleted once read. The runs given are left as they are.
    """
    made = []
    try:
        while len(paths) > FAN_IN:
            merged = []
            for i in range(0, len(paths), FAN_IN):
                merged.append(FileSystems.join(work_dir, f"merged-{uuid.uuid4().hex}"))
                write_run(merged[-1], _merge(paths[i:i + FAN_IN], keys), keys)
            _delete(made)
            paths = made = merged
        yield from _merge(paths, keys)
    finally:
        _delete(made)


def _merge(paths, keys):
    return heapq.merge(*(read_run(path, keys) for path in paths), key=run_order)


def _delete(paths):
    """Deletes merged runs; a failure is logged, not raised (it must not hide the error that
    ended a merge, and the runs' directory is deleted at the end anyway)."""
    try:
        if paths:
            FileSystems.delete(paths)
    except Exception as e:  # noqa: BLE001
        logging.warning("could not delete merged runs of the batch learner: %s", e)


def blocks(examples, size: int, clock=None):
    """One key's examples in `run_order`, in lists of at most `size` new events (after `clock`,
    the order its model has applied up to, or None) and `size` replays (at or before it); new
    events are counted apart so that every full list holds whole mini-batches, whatever came
    before. Copies of one event stay in one list.

    >>> from core.records import Example
    >>> events = [Example(i, t, {}, True) for i, t in [("x", 1), ("y", 2), ("y", 2), ("z", 3)]]
    >>> [[e.event_id for e in b] for b in blocks(events, 1)]
    [['x'], ['y', 'y'], ['z']]
    >>> [[e.event_id for e in b] for b in blocks(events, 2, clock=(2, "y"))]
    [['x', 'y', 'y', 'z']]
    >>> [[e.event_id for e in b] for b in blocks(events, 1, clock=(2, "y"))]
    [['x'], ['y', 'y', 'z']]
    """
    block, counts, last = [], [0, 0], None  # [replays, new events] in this block
    for example in examples:
        order = (example.event_time, example.event_id)
        if order != last:
            last = order
            is_new = clock is None or order > tuple(clock)
            if counts[is_new] == size:
                yield block
                block, counts = [], [0, 0]
            counts[is_new] += 1
        block.append(example)
    if block:
        yield block
