"""Several serving processes on the shared stores: the learning plane publishes to PostgreSQL
(models) and Redis (profiles), two servers read them, and answer alike."""
import pytest
import requests

from core.interactions import impression_features
from core.publishing import load_version
from models import serde
from pipelines import recommend
from core.requests import lookup, request_fields
from stores.online import open_online_store
from stores.registry import open_registry
from tests.servers import serving

KEY = "5e" * 32


def test_two_replicas_on_postgresql_and_redis_serve_the_same(postgres_url, redis_url, tmp_path, monkeypatch):
    monkeypatch.setenv(serde.KEY_ENV, KEY)  # a registry on a server: the key comes from the environment
    summary = recommend.run(["--impressions", "600", "--seed", "3", "--output", str(tmp_path / "out"),
                             "--registry", postgres_url, "--online_store", redis_url])
    registry, store = open_registry(postgres_url), open_online_store(redis_url)
    version = registry.latest("recommender")
    assert version.step == summary["models"]["recommender"]["count"]
    assert store.count("user") > 0 and store.count("item") > 0
    model = load_version(registry, version, serde.keyring(KEY))
    users = sorted(entity for entity, _, _ in store.scan("user"))[:20]
    items = sorted(entity for entity, _, _ in store.scan("item"))[:20]
    stores = (postgres_url, redis_url)
    with serving(stores, "--event_log", str(tmp_path / "a.avro"), "--epsilon", "0", "--cache_s", "0") as a, \
            serving(stores, "--event_log", str(tmp_path / "b.avro"), "--epsilon", "0", "--cache_s", "0") as b:
        for user, item in zip(users, items):
            request = {"user_id": user, "item_id": item, "item_genres": ["drama"], "position": 1, "device": "tv"}
            answers = [requests.post(f"{url}/predict", json=request, timeout=5).json() for url in (a, b)]
            for got in answers:  # each: the published model over the stored profiles at its time
                fields = request_fields(request, got["served_at_ms"], lookup(store, request))
                assert got["model_version"] == version.version
                assert got["probability"] == model.predict_proba_one(impression_features(fields))[True]
            assert answers[0]["probability"] == pytest.approx(answers[1]["probability"], rel=1e-6)
        ranked = [requests.get(f"{url}/recommendations/{users[0]}", params={"k": 10}, timeout=5).json()
                  for url in (a, b)]
    assert ranked[0]["source"] == ranked[1]["source"] == "live"
    assert [i["item_id"] for i in ranked[0]["items"]] == [i["item_id"] for i in ranked[1]["items"]]


def test_a_server_without_the_key_of_a_shared_registry_says_so(postgres_url, redis_url, monkeypatch):
    import subprocess
    import sys

    monkeypatch.delenv(serde.KEY_ENV, raising=False)
    done = subprocess.run([sys.executable, "-m", "serving", "--registry", postgres_url, "--online_store", redis_url],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "a store on a server has no key file beside it" in done.stderr
