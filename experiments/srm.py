"""Sample-ratio mismatch: do the users counted per variant fit the split's weights?

A mismatch means the assignment or the logging is broken, and no effect estimate can be
trusted. Checked continuously, a chi-square test would raise false alarms like any peeked
test; the sequential test is Lindon and Malek's Dirichlet-multinomial Bayes factor ("Anytime-
Valid Inference For Multinomial Count Data", NeurIPS 2022), valid at every peek. The chi-square
test (scipy) is the fixed-horizon check for a report. Counts are of users, the unit of
assignment.

>>> round(chi_square_p([821588, 815482], [0.5, 0.5]), 7)  # Fabijan et al., KDD 2019
1.8e-06
>>> sequential_p([5000, 5050], [0.5, 0.5]) == 1.0
True
"""
from __future__ import annotations

import numpy as np
from scipy import special, stats


def chi_square_p(counts, weights) -> float:
    """Pearson's chi-square p-value of the counts against the expected split."""
    counts = np.asarray(counts, float)
    expected = np.asarray(weights, float) / np.sum(weights) * counts.sum()
    return float(stats.chisquare(counts, expected).pvalue)


def log_bayes_factor(counts, weights, concentration: float = 100.0):
    """log of the Dirichlet-multinomial Bayes factor against the split, prior Dirichlet(k w).

    `counts` may be 2-d (one row per peek) for a whole sequence at once."""
    n = np.asarray(counts, float)
    theta = np.asarray(weights, float) / np.sum(weights)
    prior = concentration * theta
    log_beta = lambda a: special.gammaln(a).sum(axis=-1) - special.gammaln(a.sum(axis=-1))
    return log_beta(prior + n) - log_beta(prior) - special.xlogy(n, theta).sum(axis=-1)


def sequential_p(counts, weights, concentration: float = 100.0):
    """The always-valid p-value after these counts: the running minimum of 1 / Bayes factor
    over the rows of `counts` (one row: one peek)."""
    p = np.minimum(1.0, np.exp(-log_bayes_factor(counts, weights, concentration)))
    return float(np.min(p)) if np.ndim(p) else float(p)
