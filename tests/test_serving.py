"""The serving process, run as a real server (`python -m serving`, uvicorn) against what the main
job published, asked over HTTP by a real client."""
import subprocess
import sys
import threading
import time

import pytest
import requests
from river import linear_model

from core.features import PROFILES, featurise
from core.interactions import impression_features
from core.records import Row
from models import serde
from pipelines import recommend
from core.requests import request_fields
from stores.online import open_online_store
from core.publishing import load_version
from stores.registry import open_registry
from tests.servers import serving, wait

REQUEST = {"item_genres": ["drama"], "position": 2, "device": "tv"}


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """The main job's output folder: it published its models and profiles there."""
    out = tmp_path_factory.mktemp("published")
    recommend.run(["--impressions", "600", "--seed", "3", "--output", str(out)])
    return out


@pytest.fixture
def server(published, tmp_path):
    with serving(published, "--event_log", str(tmp_path / "served.avro")) as url:
        yield url


def _known_pair(published):
    """A user and an item the job has profiles of."""
    store = open_online_store(str(published / "online.sqlite"))
    user = store._db.execute("SELECT entity FROM profiles WHERE kind = 'user' ORDER BY clock_ms DESC").fetchone()[0]
    item = store._db.execute("SELECT entity FROM profiles WHERE kind = 'item' ORDER BY clock_ms DESC").fetchone()[0]
    return user, item, store


def test_predicts_with_the_published_model_and_the_pipelines_features(server, published):
    user, item, store = _known_pair(published)
    answer = requests.post(f"{server}/predict", json={"user_id": user, "item_id": item, **REQUEST}, timeout=5)
    assert answer.status_code == 200, answer.text
    got = answer.json()
    registry = open_registry(str(published / "registry.sqlite"))
    newest = registry.latest("recommender")
    assert (got["model"], got["model_version"], got["model_step"]) == ("recommender", newest.version, newest.step)
    # What the learning plane computes for an impression at the request's time: the feature
    # stages' featurise over the published profiles, then the model's features.
    row = Row("request", got["served_at_ms"], {"event_id": "request", "event_type": "impression",
                                               "event_time": got["served_at_ms"], "user_id": user,
                                               "item_id": item, **REQUEST})
    for kind, (profile_type, field) in PROFILES.items():
        state, clock = store.get(kind, [row.fields[field]])[row.fields[field]]
        assert got["profile_clock_ms"][kind] == clock
        (row,) = featurise(profile_type(state), [row])
    model = load_version(registry, newest, serde.store_key(registry.path))
    assert got["probability"] == model.predict_proba_one(impression_features(row.fields))[True]
    # A user and an item never seen: new profiles, a prediction all the same.
    fresh = requests.post(f"{server}/predict", json={"user_id": "newcomer", "item_id": "new-item", **REQUEST},
                          timeout=5).json()
    assert fresh["profile_clock_ms"] == {"user": None, "item": None} and 0 < fresh["probability"] < 1


def test_bad_requests_get_field_errors(server):
    answer = requests.post(f"{server}/predict", json={"user_id": "", "item_id": "i", "position": 12}, timeout=5)
    assert answer.status_code == 422
    assert {tuple(e["loc"]) for e in answer.json()["detail"]} == {("body", "user_id"), ("body", "position")}
    extra = requests.post(f"{server}/predict", json={"user_id": "u", "item_id": "i", "position": 1, "price": 3},
                          timeout=5)
    assert extra.status_code == 422 and extra.json()["detail"][0]["loc"] == ["body", "price"]
    schema = requests.get(f"{server}/openapi.json", timeout=5).json()
    assert {"/predict", "/healthz", "/models"} <= schema["paths"].keys()
    assert requests.get(f"{server}/docs", timeout=5).status_code == 404  # its scripts would come from a CDN
    huge = requests.post(f"{server}/predict", data=b"x" * 100_000, headers={"content-type": "application/json"},
                         timeout=5)
    assert huge.status_code == 413


def test_new_versions_are_served_without_a_failed_request_and_forged_ones_never(server, published):
    registry = open_registry(str(published / "registry.sqlite"))
    before = registry.latest("recommender")
    statuses, versions, stop = [], [], threading.Event()

    def ask():
        while not stop.is_set():
            r = requests.post(f"{server}/predict", json={"user_id": "u1", "item_id": "i1", **REQUEST}, timeout=5)
            statuses.append(r.status_code)
            versions.append(r.json().get("model_version"))

    asking = threading.Thread(target=ask)
    asking.start()
    try:
        time.sleep(0.5)
        model = load_version(registry, before, serde.store_key(registry.path))
        model.learn_one(impression_features(request_fields({"user_id": "u1", "item_id": "i1", **REQUEST}, 0, {})),
                        True)
        newer = registry.publish("recommender", serde.dumps(model, serde.store_key(registry.path)),
                                 step=before.step + 1, clock_ms=before.clock_ms + 1)
        wait(lambda: versions and versions[-1] == newer.version)
        # Signed with another key: refused, the server stays on the version it has.
        registry.publish("recommender", serde.dumps(linear_model.LogisticRegression(), serde.keyring("f" * 32)),
                         step=newer.step + 1, clock_ms=newer.clock_ms + 1)
        wait(lambda: requests.get(f"{server}/models", timeout=5).json()["rejected_versions"] == 1)
        time.sleep(0.5)
    finally:
        stop.set()
        asking.join()
    assert set(statuses) == {200} and len(statuses) > 20
    assert set(versions) == {before.version, newer.version}
    assert versions == sorted(versions)  # once the new one is served, only it
    served = requests.get(f"{server}/models", timeout=5).json()["models"]
    assert [(m["model"], m["version"], m["step"]) for m in served] == [("recommender", newer.version, newer.step)]


def test_refuses_to_start_without_what_the_learning_plane_publishes(tmp_path):
    done = subprocess.run([sys.executable, "-m", "serving", "--registry", str(tmp_path / "none.sqlite")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "no file --registry" in done.stderr and "python -m pipelines.recommend" in done.stderr
