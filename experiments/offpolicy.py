"""Off-policy estimates: what another policy would have earned, from logs of (action, the
probability it was logged with, reward). The logging policy must give every action the
target policy takes a positive probability (the bandit's floor sees to it).

- `ips`: inverse propensity scoring (Horvitz-Thompson): unbiased, high variance;
- `snips`: self-normalised IPS: divides by the sum of weights instead of n;
- `doubly_robust`: a reward model (here each action's mean reward in the logs) plus an IPS
  correction of its error (Dudik, Langford and Li, ICML 2011): unbiased if either part is right.

Policies here are non-contextual: a probability per action.

>>> actions, propensities, rewards = [0, 1, 1, 0], [0.5, 0.5, 0.5, 0.5], [1, 0, 1, 0]
>>> ips(actions, propensities, rewards, target=[1.0, 0.0])
0.5
>>> doubly_robust(actions, propensities, rewards, target=[0.0, 1.0])
0.5
"""
from __future__ import annotations

import numpy as np


def _weights(actions, propensities, target) -> np.ndarray:
    actions = np.asarray(actions, int)
    return np.asarray(target, float)[actions] / np.asarray(propensities, float)


def ips(actions, propensities, rewards, target) -> float:
    return float(np.mean(_weights(actions, propensities, target) * np.asarray(rewards, float)))


def snips(actions, propensities, rewards, target) -> float:
    w = _weights(actions, propensities, target)
    return float(np.sum(w * np.asarray(rewards, float)) / np.sum(w))


def doubly_robust(actions, propensities, rewards, target) -> float:
    actions, rewards = np.asarray(actions, int), np.asarray(rewards, float)
    target = np.asarray(target, float)
    counts = np.bincount(actions, minlength=len(target))
    sums = np.bincount(actions, weights=rewards, minlength=len(target))
    model = np.divide(sums, counts, out=np.zeros(len(target)), where=counts > 0)
    w = _weights(actions, propensities, target)
    return float(target @ model + np.mean(w * (rewards - model[actions])))
