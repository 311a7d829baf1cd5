"""Shared test data: events from river's shipped datasets, and river's own reference loop."""
import itertools

import pytest
from river import datasets

from core.records import Example
from models import factory

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


ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def kafka_bootstrap():
    """The project's real Kafka broker (scripts/kafka.sh), started for the session if needed."""
    import os
    import subprocess

    script = ["bash", str(ROOT / "scripts" / "kafka.sh")]
    was_running = subprocess.run(script + ["status"], capture_output=True).returncode == 0
    started = subprocess.run(script + ["start"], capture_output=True, text=True)
    assert started.returncode == 0, f"could not start Kafka:\n{started.stderr[-3000:]}"
    yield f"127.0.0.1:{os.environ.get('KAFKA_PORT', '19092')}"  # kafka.sh's port
    if not was_running:
        subprocess.run(script + ["stop"], capture_output=True)


@pytest.fixture(scope="session")
def schema_registry():
    """The project's schema registry (scripts/schema_registry.sh: Apicurio, Confluent API),
    started for the session if needed; its Confluent API URL."""
    import os
    import subprocess

    script = ["bash", str(ROOT / "scripts" / "schema_registry.sh")]
    was_running = subprocess.run(script + ["status"], capture_output=True).returncode == 0
    started = subprocess.run(script + ["start"], capture_output=True, text=True)
    assert started.returncode == 0, f"could not start the schema registry:\n{started.stderr[-3000:]}"
    port = os.environ.get("SCHEMA_REGISTRY_PORT", "18082")  # schema_registry.sh's port
    yield f"http://127.0.0.1:{port}/apis/ccompat/v7"
    if not was_running:
        subprocess.run(script + ["stop"], capture_output=True)
