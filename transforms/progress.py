"""Progress and counts: named progress counters that a console in the same process reads (a
progress bar), ticked by `add_progress` (the learner's, as it applies events); and
`CountTags`, which counts tags once the input ends.

A job's outputs do not depend on the counters: they live in the worker's process. With the
local runners (FnApiRunner, Prism and Flink with LOOPBACK workers) that is the submitting
process, so its console sees the counts; workers in other processes (Flink's EXTERNAL worker
pools) tick counters nobody reads.
"""
import collections
import threading

import apache_beam as beam

from transforms.chunks import ChunkPerKey

_COUNTS = collections.Counter()
_LOCK = threading.Lock()


def progress_count(name: str) -> int:
    """The count of the progress counter `name` in this process."""
    return _COUNTS[name]


def add_progress(name: str, count: int) -> None:
    """Adds `count` to the progress counter `name` (thread-safe).

    >>> add_progress("doctest-run", 3); add_progress("doctest-run", 2); progress_count("doctest-run")
    5
    """
    with _LOCK:
        _COUNTS[name] += count


class CountTags(beam.PTransform):
    """Counts string tags from several PCollections: `{tag: count}` pairs, once input ends.

    Groups with GroupByKey, not CombinePerKey: see `transforms.evaluation.metrics`.
    """

    def expand(self, tag_collections):
        return (
            tag_collections
            | "Flatten" >> beam.Flatten()
            | "One" >> beam.Map(lambda tag: (tag, 1))
            | "Chunk" >> ChunkPerKey(windowfn=beam.window.GlobalWindows())
            | "Group" >> beam.GroupByKey()
            | "Count" >> beam.MapTuple(lambda tag, chunks: (tag, sum(len(c) for c in chunks))))
