"""Progressive validation scores that travel with a model: each label the learner learns is
first predicted by the model as it stands (test, then train) and scored with river's metrics
(`core.scoring.METRICS`), so that every published version says how its model has done so far.

For an event predicted and learned at once (`predict_learn`) that is the prediction the learner
serves; for a delayed label (`learn`) the model predicts the impression's features again just
before learning them, one `predict_proba_one` more per label (only learners that publish do).

The scores are kept on the model object itself, so that they are saved, resumed from a
snapshot and published wherever the model is, in the same signed bytes, without a second
state to keep in step with it.

>>> from river import linear_model
>>> model = linear_model.LogisticRegression()
>>> scores = of(model, "binary")
>>> scores.update(True, True, {True: 0.8, False: 0.2})
>>> scores.update(False, True, {True: 0.6, False: 0.4})
>>> {name: round(value, 3) for name, value in summary(model).items() if not name.startswith("window")}
{'count': 2, 'accuracy': 0.5, 'rocauc': 1.0, 'logloss': 0.57}

A binary task's scores also hold the last `WINDOW` labels' (`window_*`: what the dashboard
draws over time, where scores since the start would hide a decay), and the event time of the
newest label (`label_ms`, given to `update`).

>>> scores.update(True, True, {True: 0.9, False: 0.1}, at_ms=5_000)
>>> {k: round(v, 3) for k, v in summary(model).items() if k.startswith(("window", "label"))}
{'window_labels': 3, 'window_logloss': 0.415, 'window_rocauc': 1.0, 'window_ctr': 0.667, 'window_mean_p': 0.767, 'label_ms': 5000}
"""
from __future__ import annotations

import collections
import math

from core import scoring
from core.scoring import METRICS

ATTRIBUTE = "_streamml_progressive"  # where a model keeps its scores
WINDOW = 2_000  # labels in the windowed scores
EPS = 1e-15  # river's LogLoss clamps predictions so


class Window:
    """A binary model's last `size` labels and predictions, scored when asked (`get`, at each
    publication): log loss, ROC AUC (exact: the share of (click, no click) pairs ranked right, ties
    half), the label rate (CTR) and the mean prediction (their ratio is the calibration). Kept
    as pairs, not as river's rolling metrics: a label costs an append, not a metric's update and
    revert (50 us a label, more than the learning)."""

    def __init__(self, size: int = WINDOW):
        self.size = size
        self.pairs: collections.deque = collections.deque(maxlen=size)
        self.count = 0

    def update(self, y: bool, p: float) -> None:
        self.pairs.append((bool(y), p))
        self.count += 1

    def get(self) -> dict:
        n = len(self.pairs)
        clicks = sum(y for y, _ in self.pairs)
        logloss = sum(-math.log(q if y else 1 - q) for y, q in ((y, min(max(p, EPS), 1 - EPS)) for y, p in self.pairs)) / n
        return {"window_labels": n, "window_logloss": logloss, "window_rocauc": _rocauc(self.pairs, clicks),
                "window_ctr": clicks / n, "window_mean_p": sum(p for _, p in self.pairs) / n}


def _rocauc(pairs, positives: int) -> float:
    """Mann-Whitney: the mean rank of the clicks among all predictions (ties: their mean rank)."""
    negatives = len(pairs) - positives
    if not positives or not negatives:
        return float("nan")
    ranked, rank_sum, i = sorted(pairs, key=lambda pair: pair[1]), 0.0, 0
    while i < len(ranked):
        j = i
        while j < len(ranked) and ranked[j][1] == ranked[i][1]:
            j += 1
        rank_sum += (i + j + 1) / 2 * sum(y for y, _ in ranked[i:j])  # ranks i+1..j, their mean
        i = j
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


class Scores:
    """River's metrics of one task over (label, prediction) pairs, in the order given."""

    def __init__(self, task: str):
        self.task, self.count = task, 0
        self.metrics = {name: cls() for name, cls in METRICS[task].items()}
        self.window = Window() if task == "binary" else None
        self.label_ms = None

    def update(self, y, y_pred, proba: dict | None, at_ms: int | None = None) -> None:
        if y_pred is None and not proba:
            return  # a model that has learned nothing yet says nothing: not scored (as core.scoring)
        self.count += 1
        scoring.update(self.metrics, self.task, y, y_pred, proba)
        window = getattr(self, "window", None)  # None in scores saved before there were windows
        if window is not None and proba:
            window.update(bool(y), proba.get(True, 0.0))
        if at_ms is not None:
            self.label_ms = at_ms

    def get(self) -> dict:
        scores = {"count": self.count, **{name: float(m.get()) for name, m in self.metrics.items()}}
        window = getattr(self, "window", None)
        if window is not None and window.count:
            scores.update(window.get())
        if getattr(self, "label_ms", None) is not None:
            scores["label_ms"] = self.label_ms
        return scores


def of(model, task: str) -> Scores:
    """The scores `model` carries, new ones if none yet."""
    scores = getattr(model, ATTRIBUTE, None)
    if scores is None:
        scores = Scores(task)
        setattr(model, ATTRIBUTE, scores)
    return scores


def summary(model) -> dict:
    """What `model` has scored so far ({} if nothing)."""
    scores = getattr(model, ATTRIBUTE, None)
    return scores.get() if scores is not None else {}
