"""Which variant serves a request: a pure function of the experiment, its routing state (from
the experiments store, written by its one owner), the user and the request. Replicas that
hold the same config and state version route every request the same way.

- ab: the split of the config's weights over the user's bucket (sticky);
- canary: control and canary split at the state's weight (1% first; 0 once aborted, 1 once
  promoted); raising the weight only moves users from control to the canary;
- bandit: a variant drawn per request with the state's Thompson probabilities, by a uniform
  hashed from (salt, user, request), so every replica draws the same;
- shadow: control serves; the other variant scores off the request path;
- a decided A/B (`ship` or `stop`) serves its chosen variant to everyone.

The probability logged with each impression is the chance that this request got this variant.

>>> from experiments.config import parse
>>> ab = parse({"name": "ab", "kind": "ab", "control": "a", "weights": {"a": 0.5, "b": 0.5},
...             "variants": {"a": {"model": "recommender"}, "b": {"model": "fast"}}})
>>> route(ab, {}, "user-1", "r1")
Assignment(experiment='ab', variant='a', model_key='recommender', bucket=5584, probability=0.5, shadow=None)
>>> route(ab, {"decision": {"action": "ship", "variant": "b"}}, "user-1", "r1").variant
'b'
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib

from experiments.assignment import Split, bucket
from experiments.canary import ABORTED, PROMOTED
from experiments.config import Experiment


@dataclasses.dataclass(frozen=True)
class Assignment:
    experiment: str
    variant: str
    model_key: str  # the model that serves the request
    bucket: int
    probability: float  # of this variant for this request
    shadow: str | None = None  # the model key that scores off the request path


def route(experiment: Experiment, state: dict, user_id: str, request_id: str) -> Assignment:
    b = bucket(user_id, experiment.salt)
    decision = state.get("decision") or {}
    if decision.get("variant") in experiment.variants:
        return _assigned(experiment, decision["variant"], b, 1.0)
    if experiment.kind == "shadow":
        shadow = experiment.variants[experiment.treatment()].model
        return dataclasses.replace(_assigned(experiment, experiment.control, b, 1.0), shadow=shadow)
    if experiment.kind == "bandit":
        probabilities = state.get("probabilities") or {v: 1 / len(experiment.variants) for v in experiment.variants}
        u, total = _uniform(experiment.salt, user_id, request_id), 0.0
        for variant in experiment.variants:  # the config's order: the same on every replica
            total += probabilities.get(variant, 0.0)
            if u < total:
                return _assigned(experiment, variant, b, probabilities[variant])
        return _assigned(experiment, variant, b, probabilities.get(variant, 0.0))
    weights = experiment.weights if experiment.kind == "ab" else _canary_weights(experiment, state)
    variant = _split(tuple(weights.items()), experiment.control).variant(b)
    return _assigned(experiment, variant, b, weights[variant])


@functools.lru_cache(maxsize=64)
def _split(weights: tuple, control: str) -> Split:
    """The split of these weights, made once (it is checked and laid out on buckets), not per request."""
    return Split(dict(weights), control)


def canary_weight(experiment: Experiment, state: dict) -> float:
    """The canary's share of users now."""
    if state.get("state") == ABORTED:
        return 0.0
    if state.get("state") == PROMOTED:
        return 1.0
    return float(state.get("weight", experiment.ramp.stages[0].weight))


def _canary_weights(experiment: Experiment, state: dict) -> dict[str, float]:
    w = canary_weight(experiment, state)
    return {experiment.control: 1 - w, experiment.treatment(): w}


def _assigned(experiment: Experiment, variant: str, b: int, probability: float) -> Assignment:
    return Assignment(experiment.name, variant, experiment.variants[variant].model, b, probability)


def _uniform(salt: str, user_id: str, request_id: str) -> float:
    digest = hashlib.blake2b(f"{salt}\x00{user_id}\x00{request_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2 ** 64
