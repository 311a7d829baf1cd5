"""User-level ratio metrics (CTR = clicks / impressions) by the delta method.

Users are the unit of assignment and their activity is skewed, so impressions are not
independent: a heavy user's impressions move together. The ratio of sums over users is
estimated with the variance the delta method gives it (Deng, Knoblich and Lu, "Applying the
Delta Method in Metric Analytics", KDD 2018):

    R = sum(y) / sum(x),   Var(R) ~ (s_yy - 2 R s_xy + R^2 s_xx) / (n * mean(x)^2)

where s are the sample (co)variances of the per-user values. Moments are kept as running sums,
so a stream of users updates them in O(1) and `numpy.cumsum` gives every peek at once.

>>> m = Moments.of(impressions=[10, 2, 30, 5], clicks=[1, 0, 2, 1])
>>> round(float(m.ratio()), 4), round(float(m.variance()), 6)
(0.0851, 0.000415)
>>> a = Moments.of([10, 12, 9, 11], [1, 1, 0, 1])
>>> estimate, variance = difference(a, m)
>>> round(float(estimate), 4), round(float(variance), 6)
(0.0137, 0.000839)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Moments:
    """Sums over users of x (the denominator: impressions), y (the numerator: clicks, or a
    per-impression loss summed), their squares and product. Fields may be numpy arrays: one
    entry per peek."""
    n: np.ndarray | float
    x: np.ndarray | float
    y: np.ndarray | float
    xx: np.ndarray | float
    yy: np.ndarray | float
    xy: np.ndarray | float

    @classmethod
    def of(cls, impressions, clicks) -> Moments:
        """The moments of one group of users, each user's impressions and clicks."""
        x, y = np.asarray(impressions, float), np.asarray(clicks, float)
        return cls(len(x), x.sum(), y.sum(), (x * x).sum(), (y * y).sum(), (x * y).sum())

    @classmethod
    def running(cls, impressions, clicks, mask=None) -> Moments:
        """The moments after each user in turn (arrays), for a sequence of peeks; users where
        `mask` is False (another variant's) count for nothing."""
        x, y = np.asarray(impressions, float), np.asarray(clicks, float)
        m = np.ones(len(x)) if mask is None else np.asarray(mask, float)
        x, y = x * m, y * m
        return cls(np.cumsum(m), np.cumsum(x), np.cumsum(y),
                   np.cumsum(x * x), np.cumsum(y * y), np.cumsum(x * y))

    def __add__(self, other: Moments) -> Moments:
        return Moments(self.n + other.n, self.x + other.x, self.y + other.y,
                       self.xx + other.xx, self.yy + other.yy, self.xy + other.xy)

    def ratio(self):
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.divide(self.y, self.x)

    def variance(self):
        """The delta-method variance of `ratio()`; NaN below two users or with no impressions."""
        n = np.asarray(self.n, float)
        with np.errstate(invalid="ignore", divide="ignore"):
            mx, my = self.x / n, self.y / n
            sxx = (self.xx - n * mx * mx) / (n - 1)
            syy = (self.yy - n * my * my) / (n - 1)
            sxy = (self.xy - n * mx * my) / (n - 1)
            r = my / mx
            v = (syy - 2 * r * sxy + r * r * sxx) / (n * mx * mx)
        # Sums of squares lose a few ulps: a variance is never negative.
        return np.where(n >= 2, np.maximum(v, 0.0), np.nan)[()]


def difference(control: Moments, treatment: Moments):
    """Treatment minus control in the ratio, and its variance (independent groups)."""
    return (treatment.ratio() - control.ratio(),
            treatment.variance() + control.variance())

