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


def task_of(model: base.Estimator) -> str:
    """'binary', 'multiclass' or 'regression', from what the model says it is."""
    if isinstance(model, base.Classifier):
        return "multiclass" if model._multiclass else "binary"
    if isinstance(model, base.Regressor):
        return "regression"
    raise TypeError(f"{type(model).__name__} is neither a classifier nor a regressor")
