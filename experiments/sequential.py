"""Always-valid inference: the mixture sequential probability ratio test (mSPRT) and its
confidence sequence, for an estimate that is approximately normal with a known variance.

Peeking at a fixed-horizon test after every batch of users makes an A/A test "find" effects;
these are valid at every peek at once. For an estimate `e` of effect `t` with variance `V` and a
normal mixing distribution N(0, tau2) over the alternative (Robbins 1970; Johari, Koomen,
Pekelis and Walsh, "Always Valid Inference", Operations Research 2022, eq. 11):

    Lambda = sqrt(V / (V + tau2)) * exp(tau2 * e^2 / (2 V (V + tau2)))

The always-valid p-value is the running minimum of 1 / Lambda, and the confidence sequence is
every `t` the test would not reject: e +- sqrt(V (V + tau2) / tau2 * (2 log(1/alpha) +
log((V + tau2) / V))), Howard, Ramdas, McAuliffe and Sekhon's two-sided normal mixture
boundary (Annals of Statistics 2021, eq. 14) in the units of the estimate. With the delta
method's plug-in variance the guarantee is asymptotic (Waudby-Smith et al., "Time-uniform
central limit theory and asymptotic confidence sequences", 2021).

>>> tau2 = mixing_variance(planned_variance=1e-5, alpha=0.05)
>>> round(float(radius(1e-5, tau2, 0.05)) / (1e-5 ** 0.5), 2)  # z-units at the planned peek
3.04
>>> float(p_value(0.0, 1e-5, tau2))
1.0
"""
from __future__ import annotations

import numpy as np
from scipy import optimize


def log_likelihood_ratio(estimate, variance, tau2, null=0.0):
    """log Lambda: the mixture likelihood ratio of `null` against the normal mixture."""
    e = np.asarray(estimate, float) - null
    v = np.asarray(variance, float)
    with np.errstate(divide="ignore", invalid="ignore"):  # no variance yet: NaN, no evidence
        return 0.5 * np.log(v / (v + tau2)) + tau2 * e * e / (2 * v * (v + tau2))


def p_value(estimate, variance, tau2, null=0.0):
    """1 / Lambda capped at 1: an always-valid p-value once its running minimum is taken."""
    return np.minimum(1.0, np.exp(-log_likelihood_ratio(estimate, variance, tau2, null)))


def radius(variance, tau2, alpha):
    """The half-width of the (1 - alpha) confidence sequence at variance `variance`."""
    v = np.asarray(variance, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.sqrt(v * (v + tau2) / tau2 * (2 * np.log(1 / alpha) + np.log((v + tau2) / v)))


def mixing_variance(planned_variance: float, alpha: float) -> float:
    """The tau2 that makes the confidence sequence narrowest when the estimate's variance is
    `planned_variance` (e.g. at the budget of users): tau2 = r * V with r minimising
    (1 + 1/r) (2 log(1/alpha) + log(1 + r))."""
    if not planned_variance > 0:
        raise ValueError(f"the planned variance must be positive, got {planned_variance!r}")
    width = lambda log_r: (1 + np.exp(-log_r)) * (2 * np.log(1 / alpha) + np.log1p(np.exp(log_r)))
    best = optimize.minimize_scalar(width, bounds=(-10, 10), method="bounded")
    return float(np.exp(best.x) * planned_variance)


class ConfidenceSequence:
    """The running state of one always-valid test: update it at every peek.

    >>> cs = ConfidenceSequence(alpha=0.05, tau2=1e-4)
    >>> cs.update(0.02, 1e-5)
    >>> cs.p_value < 0.05, cs.low > 0
    (True, True)
    """

    def __init__(self, alpha: float, tau2: float):
        if not 0 < alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
        self.alpha, self.tau2 = alpha, tau2
        self.p_value = 1.0
        self.estimate = self.low = self.high = float("nan")

    def update(self, estimate: float, variance: float) -> None:
        if not (np.isfinite(estimate) and variance > 0):
            return  # too few users yet for an estimate with a variance
        r = float(radius(variance, self.tau2, self.alpha))
        self.estimate, self.low, self.high = float(estimate), estimate - r, estimate + r
        self.p_value = min(self.p_value, float(p_value(estimate, variance, self.tau2)))
