"""Progress logging for long runs: a pass-through step that logs counts and rates."""
import logging
import time

import apache_beam as beam

from transforms.chunks import ChunkPerKey


class LogProgress(beam.PTransform):
    """Passes elements through; logs `what` every `every` elements seen by a worker."""

    def __init__(self, what: str, every: int = 10_000):
        super().__init__()
        self.what, self.every = what, every

    def expand(self, pcoll):
        return pcoll | "Log" >> beam.ParDo(_LogDoFn(self.what, self.every))


class _LogDoFn(beam.DoFn):
    def __init__(self, what, every):
        self.what, self.every = what, every

    def setup(self):
        self._seen, self._start = 0, time.monotonic()

    def process(self, element):
        self._seen += 1
        if self._seen % self.every == 0:
            elapsed = time.monotonic() - self._start
            logging.info("%s: %d so far (%.0f/s)", self.what, self._seen, self._seen / max(elapsed, 1e-9))
        yield element


class CountTags(beam.PTransform):
    """Counts string tags from several PCollections: `{tag: count}` pairs, once input ends.

    Groups with GroupByKey, not CombinePerKey: see `transforms.metrics`.
    """

    def expand(self, tag_collections):
        return (
            tag_collections
            | "Flatten" >> beam.Flatten()
            | "One" >> beam.Map(lambda tag: (tag, 1))
            | "Chunk" >> ChunkPerKey(windowfn=beam.window.GlobalWindows())
            | "Group" >> beam.GroupByKey()
            | "Count" >> beam.MapTuple(lambda tag, chunks: (tag, sum(len(c) for c in chunks))))
