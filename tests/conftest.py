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


@pytest.fixture(scope="session")
def history(tmp_path_factory):
    """An hour of simulated history without drift (6,000 impressions of 100 users), an Avro file."""
    import simulator

    path = tmp_path_factory.mktemp("history") / "history.avro"
    simulator.write_avro(simulator.generate(simulator.SimulatorConfig(impressions=6000, users=100, drift_at=1.0)),
                         str(path))
    return path


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
def browser():
    """Debian's chromium (scripts/chromium.sh installs it), headless, driven by Playwright: no
    browser is downloaded."""
    import subprocess

    from playwright.sync_api import sync_playwright

    done = subprocess.run(["bash", str(ROOT / "scripts" / "chromium.sh"), "install"], capture_output=True, text=True)
    assert done.returncode == 0, f"could not install chromium:\n{done.stderr[-3000:]}"
    (path,) = [line.split("=", 1)[1] for line in done.stdout.splitlines() if line.startswith("CHROMIUM=")]
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=path, args=["--headless=new", "--no-sandbox",
                                                                            "--disable-gpu"])
        yield chromium
        chromium.close()


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


def _service(script: str, variable: str, what: str):
    """Starts the project's `script` (scripts/<script>.sh start) if needed; yields the URL it
    prints as VARIABLE=...; stops it at the end if this session started it."""
    import subprocess

    command = ["bash", str(ROOT / "scripts" / f"{script}.sh")]
    was_running = subprocess.run(command + ["status"], capture_output=True).returncode == 0
    started = subprocess.run(command + ["start"], capture_output=True, text=True)
    assert started.returncode == 0, f"could not start {what}:\n{started.stderr[-3000:]}"
    (url,) = [line.split("=", 1)[1] for line in started.stdout.splitlines() if line.startswith(f"{variable}=")]
    yield url
    if not was_running:
        subprocess.run(command + ["stop"], capture_output=True)


@pytest.fixture(scope="session")
def s3_store():
    """The project's S3 store (scripts/s3.sh: SeaweedFS), started for the session if needed: the
    variables boto3, Beam's S3 file system and pyarrow read (endpoint, credentials, region)."""
    for url in _service("s3", "S3_ENDPOINT_URL", "the S3 store"):
        lines = (ROOT / ".run" / "s3" / "credentials.env").read_text().split()
        yield {**dict(line.split("=", 1) for line in lines), "AWS_ENDPOINT_URL_S3": url,
               "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="session")
def postgres_server():
    """The project's PostgreSQL server (scripts/postgres.sh), started for the session if needed."""
    yield from _service("postgres", "POSTGRES_URL", "PostgreSQL")


@pytest.fixture(scope="session")
def redis_server():
    """The project's Redis server (scripts/redis.sh), started for the session if needed."""
    yield from _service("redis", "REDIS_URL", "Redis")


@pytest.fixture
def postgres_url(postgres_server):
    """A new, empty database on the project's PostgreSQL server, dropped after the test."""
    import uuid

    import psycopg

    name = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    yield postgres_server.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(postgres_server, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture
def redis_url(redis_server):
    """A Redis database of the project's server, emptied before the test (tests that use Redis
    take database 1 and run one at a time)."""
    import redis

    url = redis_server.rsplit("/", 1)[0] + "/1"
    redis.Redis.from_url(url).flushdb()
    return url
