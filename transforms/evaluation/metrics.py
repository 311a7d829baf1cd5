"""Prequential metrics per event-time window and over the whole input, per model key and over
all keys (scored by `core.scoring`).

Predictions are scored in (event time, event id) order, so a window's figures are the same
whichever bundles or runner delivered them.
"""
from __future__ import annotations

import typing

import apache_beam as beam
from apache_beam.transforms import window

from core.records import ALL_KEYS, Prediction, WindowedMetric
from core.scoring import METRICS, score
from transforms import coders  # noqa: F401  (registers the record coders)
from transforms.chunks import ChunkPerKey, flatten


class WindowedMetrics(beam.PTransform):
    """Metrics per event-time window, per model key and over all keys (`scope='*'`).

    Args:
        task: 'binary', 'multiclass' or 'regression'.
        size_s: window length in seconds of event time.
        period_s: for sliding windows, the period; None gives fixed windows.
    """

    def __init__(self, task: str, size_s: float, period_s: float | None = None):
        super().__init__()
        if task not in METRICS:
            raise ValueError(f"task must be one of {sorted(METRICS)}, not {task!r}")
        if size_s <= 0 or (period_s is not None and period_s <= 0):
            raise ValueError("window size and period must be positive")
        self.task, self.size_s, self.period_s = task, size_s, period_s

    def expand(self, predictions):
        windowing = (window.FixedWindows(self.size_s) if self.period_s is None
                     else window.SlidingWindows(self.size_s, self.period_s))
        return (
            predictions
            # One group per window, split by scope when scored: the '*' scope needs the whole
            # window on one key anyway, and each prediction crosses the shuffle once, not twice.
            # Typed, so that the grouping encodes predictions with their coder, not pickle.
            | "ByWindow" >> beam.Map(lambda p: ("", p)).with_output_types(beam.typehints.KV[str, Prediction])
            | "Chunk" >> ChunkPerKey(windowfn=windowing)
            # GroupByKey, not CombinePerKey: Beam 2.77's Python streaming runner fails to
            # expand CombinePerKey; and scoring needs the whole window in event order anyway.
            | "Group" >> beam.GroupByKey()
            | "Score" >> beam.ParDo(_ScoreWindowDoFn(self.task)).with_output_types(WindowedMetric)
        )


class _ScoreWindowDoFn(beam.DoFn):
    def __init__(self, task: str):
        self.task = task

    def process(self, element, w=beam.DoFn.WindowParam):
        _, chunks = element
        by_key: dict[str, list] = {}
        for p in flatten(chunks):
            by_key.setdefault(p.model_key, []).append(p)
        start, end = w.start.micros // 1000, w.end.micros // 1000
        scores = {}
        for scope, scoped in by_key.items():
            scores[scope] = score(scoped, self.task)
            yield WindowedMetric(scope=scope, window_start=start, window_end=end, count=len(scoped),
                                 metrics=scores[scope])
        if len(by_key) == 1:  # one key: '*' scores the very same predictions
            (everything,) = by_key.values()
            yield WindowedMetric(scope=ALL_KEYS, window_start=start, window_end=end,
                                 count=len(everything), metrics=dict(scores[everything[0].model_key]))
        elif by_key:
            everything = [p for scoped in by_key.values() for p in scoped]
            yield WindowedMetric(scope=ALL_KEYS, window_start=start, window_end=end,
                                 count=len(everything), metrics=score(everything, self.task))


class ProgressiveMetrics(beam.PTransform):
    """Final progressive metrics over all predictions (bounded input: emitted when it ends):
    one dict, or with `by_key` one `(model key, dict)` per model key."""

    def __init__(self, task: str, by_key: bool = False):
        super().__init__()
        self.task, self.by_key = task, by_key

    def expand(self, predictions):
        return (
            predictions
            | "Key" >> beam.Map(lambda p: (p.model_key if self.by_key else "", p)).with_output_types(
                beam.typehints.KV[str, Prediction])
            | "Chunk" >> ChunkPerKey(windowfn=window.GlobalWindows())
            | "Group" >> beam.GroupByKey()
            | "Score" >> beam.MapTuple(self._score).with_output_types(typing.Any)
        )

    def _score(self, key, chunks):
        predictions = list(flatten(chunks))
        scores = {"count": len(predictions), **score(predictions, self.task)}
        return (key, scores) if self.by_key else scores  # (key "" when not by key)
