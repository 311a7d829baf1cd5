"""Baselines to beat: models that use no learning about the user at all."""
from __future__ import annotations

from river import base


class ItemPopularity(base.Classifier):
    """Predicts an item's recent click rate (the `i_ctr_24h` feature), whoever the user is.

    >>> ItemPopularity().predict_proba_one({"i_ctr_24h": 0.25})
    {True: 0.25, False: 0.75}
    """

    def __init__(self, feature: str = "i_ctr_24h", default: float = 0.1):
        self.feature, self.default = feature, default

    def learn_one(self, x, y):
        pass  # the item profile already learned it

    def predict_proba_one(self, x):
        p = min(max(float(x.get(self.feature, self.default)), 0.0), 1.0)
        return {True: p, False: 1.0 - p}


def popularity():
    return ItemPopularity()


class Constant(base.Classifier):
    """Predicts the same click probability for everything, and learns nothing: a deliberately
    bad model, for a canary that must be aborted.

    >>> Constant(0.9).predict_proba_one({"anything": 1.0})
    {True: 0.9, False: 0.09999999999999998}
    """

    def __init__(self, probability: float = 0.5):
        if not 0 <= probability <= 1:
            raise ValueError(f"a probability is in [0, 1], got {probability}")
        self.probability = probability

    def learn_one(self, x, y):
        pass

    def predict_proba_one(self, x):
        return {True: self.probability, False: 1.0 - self.probability}


def constant(probability: float = 0.5):
    return Constant(probability)
