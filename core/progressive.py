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
>>> {name: round(value, 3) for name, value in summary(model).items()}
{'count': 2, 'accuracy': 0.5, 'rocauc': 1.0, 'logloss': 0.57}
"""
from __future__ import annotations

from core import scoring
from core.scoring import METRICS

ATTRIBUTE = "_streamml_progressive"  # where a model keeps its scores


class Scores:
    """River's metrics of one task over (label, prediction) pairs, in the order given."""

    def __init__(self, task: str):
        self.task, self.count = task, 0
        self.metrics = {name: cls() for name, cls in METRICS[task].items()}

    def update(self, y, y_pred, proba: dict | None) -> None:
        if y_pred is None and not proba:
            return  # a model that has learned nothing yet says nothing: not scored (as core.scoring)
        self.count += 1
        scoring.update(self.metrics, self.task, y, y_pred, proba)

    def get(self) -> dict:
        return {"count": self.count, **{name: float(m.get()) for name, m in self.metrics.items()}}


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
