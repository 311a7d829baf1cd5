"""The recommender's click model (`models.zoo.recommender`) read term by term, so that a
ranking shares the work its candidates have in common.

The model is linear: P(click) = sigmoid(intercept + the sum of weight x transformed feature).
A ranking asks it about 100 impressions that differ only in the item: the user's terms are the
same for all of them, and river's `predict_proba_one` on each would compute them 100 times
(half of a ranking's time). `terms_of(model)` gives the model's `Terms`: the numeric features'
terms (`numeric`, scaled and clipped as the model does) and the categoricals' (`categorical`,
hashed as it does), and `probability` sums them in the order river's dot product does, so the
probability is river's to the bit (tested on rankings of a trained model). A model of any other
shape has no terms (None), and is asked per impression.

The terms read the model's weights and scaler when first asked about a feature: a model that
learns on needs `terms_of` again after it learned.

>>> from models.zoo import categorical, recommender
>>> model = recommender(hash_size=64)
>>> x = {"user_id": "u1", "item_id": "i1", "device": "tv", "position": "0", "hour": "20",
...      "genre_drama": 1.0, "u_ctr_24h": 0.3}
>>> model.learn_one(x, True)
>>> terms = terms_of(model)
>>> numeric = {k: v for k, v in x.items() if k not in CATEGORICAL}
>>> p = terms.probability(terms.numeric(numeric), terms.categorical(categorical(x)))
>>> p == model.predict_proba_one(x)[True]
True
>>> from models.zoo import logistic_regression
>>> terms_of(logistic_regression()) is None
True
"""
from __future__ import annotations

import dataclasses

from river import compose, linear_model, preprocessing

from models.zoo import CATEGORICAL, CLIP, categorical, clip


@dataclasses.dataclass(frozen=True)
class Terms:
    model: linear_model.LogisticRegression
    scaler: preprocessing.StandardScaler
    hasher: preprocessing.FeatureHasher
    _scales: dict = dataclasses.field(default_factory=dict, repr=False)

    def numeric(self, x: dict) -> list[float]:
        """The terms of numeric features `x` (in x's order): weight x clip(standardised value)."""
        out, known = [], self._scales
        for name, value in x.items():
            mean, sd, weight = known.get(name) or self._scale(name)
            s = (value - mean) / sd if sd else 0.0
            out.append(weight * (s if -CLIP <= s <= CLIP else (-CLIP if s < -CLIP else CLIP)))  # as zoo.clip
        return out

    def _scale(self, name) -> tuple:
        """(mean, standard deviation or 0, weight) of feature `name`, as the model has them now:
        kept for the life of these terms (one ranking), whose candidates share most names."""
        v = self.scaler.vars.get(name, 0.0)
        scale = self._scales[name] = (self.scaler.means.get(name, 0.0), v ** 0.5 if v else 0.0,
                                      self.model._weights.get(name, 0.0))
        return scale

    def categorical(self, x: dict) -> list[float]:
        """The terms of categorical features `x` (`models.zoo.categorical`'s), hashed."""
        weights = self.model._weights
        return [weights.get(bucket, 0.0) * v for bucket, v in self.hasher.transform_one(x).items()]

    def probability(self, numeric: list[float], categorical: list[float], start: float = 0.0) -> float:
        """P(click) of an impression with these terms (of all its features: `numeric` in the
        order of its features, `categorical` as hashed), or, with `start`, of the rest of its
        terms after those whose `partial_sum` is `start`."""
        return self.model.loss.mean_func(self.partial_sum(numeric + categorical, start) + self.model.intercept)

    @staticmethod
    def partial_sum(terms: list[float], start: float = 0.0) -> float:
        """`start` plus the `terms` one by one, in the model's order: its dot product's rounding."""
        for t in terms:
            start += t
        return start


def terms_of(model) -> Terms | None:
    """The `Terms` of a `models.zoo.recommender` model, or None for a model of another shape."""
    if not isinstance(model, compose.Pipeline) or len(model.steps) != 2:
        return None
    union, lr = model.steps.values()
    if not isinstance(union, compose.TransformerUnion) or type(lr) is not linear_model.LogisticRegression \
            or len(union.transformers) != 2:
        return None
    branches = [list(t.steps.values()) if isinstance(t, compose.Pipeline) else [t]
                for t in union.transformers.values()]
    shapes = [[_shape(step) for step in steps] for steps in branches]
    # Hashed first: TransformerUnion merges its branches' outputs last branch first, so the
    # numeric terms come first in the merged features, and so in the dot product.
    if shapes != [["categorical", "hasher"], ["discard", "scaler", "clip"]]:
        return None
    (_, hasher), (_, scaler, _) = branches
    if scaler.window_size is not None or not scaler.with_std:
        return None
    return Terms(lr, scaler, hasher)


def _shape(step) -> str | None:
    if isinstance(step, compose.FuncTransformer):
        return {categorical: "categorical", clip: "clip"}.get(step.func)
    if isinstance(step, preprocessing.FeatureHasher):
        return "hasher"
    if isinstance(step, preprocessing.StandardScaler):
        return "scaler"
    if isinstance(step, compose.Discard) and set(step.keys) == set(CATEGORICAL):
        return "discard"
    return None
