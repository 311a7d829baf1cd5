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

    A combine per tag (`Count.PerElement`, a `CombinePerKey`): each bundle counts its tags
    before the shuffle, so only a count per tag and bundle crosses it, whatever the input size.
    """

    def expand(self, tag_collections):
        return (
            tag_collections
            | "Flatten" >> beam.Flatten()
            | "Count" >> beam.combiners.Count.PerElement())
