"""Prequential scoring with river's metric classes, without Beam: predictions taken in (event
time, event id) order, as river's `evaluate.progressive_val_score` takes them."""
from __future__ import annotations

from typing import Iterable

from river import metrics as river_metrics

from core.records import Prediction

METRICS = {
    "binary": {"accuracy": river_metrics.Accuracy, "rocauc": river_metrics.ROCAUC,
               "logloss": river_metrics.LogLoss},
    "multiclass": {"accuracy": river_metrics.Accuracy, "macro_f1": river_metrics.MacroF1},
    "regression": {"mae": river_metrics.MAE, "rmse": river_metrics.RMSE},
}


def score(predictions: Iterable[Prediction], task: str) -> dict:
    """River metrics over predictions taken in event order, as `progressive_val_score` does.

    Label metrics use `y_pred`, probability metrics `y_proba`; a prediction that is None or
    empty (a model that has learned nothing yet) is not scored, nor is an unlabelled event.

    >>> p = [Prediction("a", "k", 0, True, True, {True: 0.9, False: 0.1}, 0),
    ...      Prediction("b", "k", 1, False, True, {True: 0.6, False: 0.4}, 1)]
    >>> score(p, "binary")["accuracy"]
    0.5
    """
    if task not in METRICS:
        raise ValueError(f"task must be one of {sorted(METRICS)}, not {task!r}")
    scores = {name: cls() for name, cls in METRICS[task].items()}
    for p in sorted(predictions, key=Prediction.order):
        if p.y_true is not None:
            update(scores, task, p.y_true, p.y_pred, p.y_proba)
    return {name: float(metric.get()) for name, metric in scores.items()}


def update(scores: dict, task: str, y_true, y_pred, y_proba) -> None:
    """Feeds one labelled prediction to river `scores` ({name: metric} of `task`): label
    metrics take `y_pred`, probability metrics `y_proba`; a missing or empty one is skipped."""
    for metric in scores.values():
        given = y_pred if task == "regression" or metric.requires_labels else y_proba
        if given is not None and given != {}:
            metric.update(y_true, given)
