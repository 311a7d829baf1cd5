"""Shared test data: events from river's shipped datasets, and river's own reference loop."""
import itertools

import pytest
from river import datasets

from models import factory
from transforms.records import Example

BINARY = "models.zoo:logistic_regression"


def phishing_examples(n=400, keys=("default",)):
    """The first n rows of river's Phishing dataset as Examples, 1 s apart, keys round-robin."""
    rows = itertools.islice(datasets.Phishing(), n)
    return [Example(f"{i:06d}", i * 1000, x, y, keys[i % len(keys)]) for i, (x, y) in enumerate(rows)]


def river_predictions(examples, spec=BINARY):
    """Predict-then-learn with bare river, one model per key, in event order: the reference."""
    models, out = {}, {}
    for e in sorted(examples, key=Example.order):
        model = models.setdefault(e.model_key, factory.build(spec))
        out[e.event_id] = (model.predict_one(e.x), model.predict_proba_one(e.x))
        model.learn_one(e.x, e.y)
    return out


@pytest.fixture
def examples():
    return phishing_examples()
