"""Builds river models from a `MODULE:FUNCTION` spec.

Pipelines ship the spec (a short string) to workers, never a live model, so every worker
builds the same fresh model and nothing unverified is unpickled.

>>> model = build("models.zoo:logistic_regression")
>>> type(model).__name__
'Pipeline'
>>> build("models.zoo")
Traceback (most recent call last):
...
ValueError: model spec 'models.zoo' must look like MODULE:FUNCTION

Keyword arguments for the factory follow a `?`, as Python literals:

>>> load("models.zoo:recommender?hash_size=1024").keywords
{'hash_size': 1024}
"""
from __future__ import annotations

import ast
import copy
import functools
import importlib

from river import base

TASKS = ("binary", "multiclass", "regression")


def load(spec: str):
    """Returns the factory function named by `spec` (with its keyword arguments bound)."""
    spec, _, query = spec.partition("?")
    kwargs = {}
    for pair in filter(None, query.split("&")):
        name, eq, value = pair.partition("=")
        if not eq or not name.isidentifier():
            raise ValueError(f"model spec argument {pair!r} must look like NAME=VALUE")
        try:
            kwargs[name] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            kwargs[name] = value  # a bare word: a string
    module_name, sep, function_name = spec.partition(":")
    if not sep or not module_name or not function_name:
        raise ValueError(f"model spec {spec!r} must look like MODULE:FUNCTION")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"model spec {spec!r}: cannot import {module_name!r}: {e}") from e
    factory = getattr(module, function_name, None)
    if not callable(factory):
        raise ValueError(f"model spec {spec!r}: {module_name} has no function {function_name!r}")
    return functools.partial(factory, **kwargs) if kwargs else factory


def build(spec: str) -> base.Estimator:
    """Calls the factory named by `spec` and checks that it returned a river estimator."""
    model = load(spec)()
    if not isinstance(model, base.Estimator):
        raise TypeError(f"model spec {spec!r} returned {type(model).__name__}, not a river estimator")
    return model


class Fresh:
    """Fresh models of one spec, as copies of a pristine prototype built once.

    A learner with one model per key makes a model for every new key. Building a river model
    costs ~0.5-1 ms here (constructors, and a `compose.Pipeline` inspects its steps'
    signatures on first use), a copy of a pristine one ~0.2 ms. The copy of a model that has
    learned nothing behaves as a freshly built one (the same parameters, the same seeded
    random state), so per-key results are unchanged.

    >>> fresh = Fresh("models.zoo:logistic_regression")
    >>> a, b = fresh(), fresh()
    >>> a is not b and a["LogisticRegression"] is not b["LogisticRegression"]
    True
    """

    def __init__(self, spec: str):
        self.spec = spec
        self._prototype = build(spec)

    def __call__(self) -> base.Estimator:
        return copy.deepcopy(self._prototype)


def task_of(model: base.Estimator) -> str:
    """'binary', 'multiclass' or 'regression', from what the model says it is."""
    if isinstance(model, base.Classifier):
        return "multiclass" if model._multiclass else "binary"
    if isinstance(model, base.Regressor):
        return "regression"
    raise TypeError(f"{type(model).__name__} is neither a classifier nor a regressor")
