"""Warm start: a learner's model for a key begins as a registered model version, not from nothing.

`registered` is a model factory (`models.factory` specs name it, so the spec, a short string,
is what goes to the workers): it loads one version from the registry, its signature checked
before anything is unpickled, and hands out that model to continue learning. The progressive
scores the version carried stay with it: the new run's scores are its own.

    --model 'core.warmstart:registered?registry=out/recommend/registry.sqlite&model_key=recommender&version=3'

`spec(registry, model_key, version)` writes that spec (`pipelines.recommend --warm_start` does).

>>> from river import linear_model
>>> from models import factory, serde
>>> from stores.registry import open_registry
>>> import os, tempfile
>>> where = os.path.join(tempfile.mkdtemp(), "registry.sqlite")
>>> model = linear_model.LogisticRegression()
>>> model.learn_one({"x": 1.0}, True)
>>> registry = open_registry(where)
>>> v = registry.publish("clicks", serde.dumps(model, serde.store_key(where)), step=1, clock_ms=5)
>>> warm = factory.build(spec(where, "clicks", v.version))
>>> warm.predict_proba_one({"x": 1.0}) == model.predict_proba_one({"x": 1.0})
True
"""
from __future__ import annotations

from core import progressive
from core.publishing import load_version
from models import serde
from stores.registry import open_registry


def registered(registry: str, model_key: str, version: int, key_file: str | None = None):
    """The model of `version` of `model_key` in `registry`, checked with the registry's keys
    (`key_file`, else $STREAMML_STATE_KEY, else `<registry>.key`)."""
    store = open_registry(registry)
    try:
        keys = serde.KeySource(file=key_file, store=registry).resolve()
        model = load_version(store, store.get(model_key, int(version)), keys)
    finally:
        store.close()
    model.__dict__.pop(progressive.ATTRIBUTE, None)
    return model


def spec(registry: str, model_key: str, version: int, key_file: str | None = None) -> str:
    """The `models.factory` spec of `registered(registry, model_key, version, key_file)`."""
    for value in (registry, model_key, key_file or ""):
        if any(c in value for c in "&?="):
            raise ValueError(f"{value!r}: a warm start's registry, model key and key file cannot hold & ? =")
    query = f"registry={registry}&model_key={model_key}&version={int(version)}"
    return f"{__name__}:registered?{query}" + (f"&key_file={key_file}" if key_file else "")
