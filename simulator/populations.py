"""Simulated experiment populations whose truth is known, drawn at once with numpy.

Users are the unit: each has a click probability (tastes differ: Beta around the base CTR)
and an activity (impressions, lognormal: a few heavy users, many light ones), so a user's
impressions are correlated and the analysis must be user-level. A user's impressions are
observed when the user enrols: a test peeks after every user.

>>> population = Population()
>>> impressions, ctr = population.draw(np.random.default_rng(1), 100_000)
>>> round(float(ctr.mean()), 3), int(np.median(impressions)), int(impressions.max()) > 100
(0.05, 4, True)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import optimize, special


@dataclass(frozen=True)
class Population:
    base_ctr: float = 0.05
    concentration: float = 20.0  # a user's CTR ~ Beta(c * base, c * (1 - base))
    mean_impressions: float = 6.0
    activity_sigma: float = 1.0  # log-sd of a user's activity

    def draw(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """n users: their impressions (at least one) and their click probabilities."""
        c = self.concentration
        ctr = rng.beta(c * self.base_ctr, c * (1 - self.base_ctr), n)
        mu = np.log(self.mean_impressions - 1) - self.activity_sigma ** 2 / 2
        activity = rng.lognormal(mu, self.activity_sigma, n)
        return 1 + rng.poisson(activity), ctr

    def user_variance(self, rng: np.random.Generator, n: int = 2_000_000) -> float:
        """n times the delta-method variance of the CTR over n users (a pilot of n users)."""
        x, p = self.draw(rng, n)
        y = rng.binomial(x, p)
        r = y.sum() / x.sum()
        return float(np.var(y - r * x, ddof=1) / x.mean() ** 2)


def ab_test(population: Population, rng: np.random.Generator, users: int, lift: float = 0.0,
            treatment_weight: float = 0.5, novelty: float = 0.0, novelty_users: float = 1.0):
    """Users in order of enrolment: (treated, impressions, clicks). Treatment multiplies the
    CTR by 1 + lift, and by 1 + novelty * exp(-i / novelty_users) for the i-th user enrolled:
    a new variant's CTR starts high and decays to its lasting level."""
    treated = rng.random(users) < treatment_weight
    x, p = population.draw(rng, users)
    boost = (1 + lift) * (1 + novelty * np.exp(-np.arange(users) / novelty_users))
    p = np.where(treated, np.minimum(p * boost, 1.0), p)
    return treated, x, rng.binomial(x, p)


def model_traffic(population: Population, rng: np.random.Generator, users: int, noise: float):
    """Users served by a model whose predicted CTR for a user is their true CTR with N(0,
    noise^2) added on the logit scale (noise 0: calibrated and sharp): (impressions, clicks,
    the sum of the log loss of the user's impressions)."""
    x, p = population.draw(rng, users)
    y = rng.binomial(x, p)
    predicted = special.expit(special.logit(p) + noise * rng.standard_normal(users))
    return x, y, -(y * np.log(predicted) + (x - y) * np.log1p(-predicted))


def noise_for_log_loss(population: Population, factor: float, n: int = 400_000, seed: int = 0):
    """The `model_traffic` noise whose log loss is `factor` times a calibrated model's."""
    def excess(noise):
        rng = np.random.default_rng(seed)  # common random numbers: a smooth root
        x, _, loss = model_traffic(population, rng, n, noise)
        rng = np.random.default_rng(seed)
        x0, _, loss0 = model_traffic(population, rng, n, 0.0)
        return loss.sum() / x.sum() / (loss0.sum() / x0.sum()) - factor
    return float(optimize.brentq(excess, 0.0, 5.0, xtol=1e-4))
