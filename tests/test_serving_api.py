"""The serving API beyond /predict, through a real server process and a real HTTP client:
recommendations, outcomes, the event log the learning plane reads, metrics, the Open Inference
Protocol, and the learning plane learning from what was served."""
import heapq
import io
import json
import math

import fastavro
import pytest
import requests

import schemas
from core.interactions import impression_features
from core.profiles import ItemProfile
from core.publishing import load_version
from models import serde
from pipelines import recommend
from core.requests import lookup, request_fields
from stores.online import open_online_store
from stores.registry import open_registry
from tests.servers import serving, wait


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """The main job's output folder: it published its models and profiles there."""
    out = tmp_path_factory.mktemp("published")
    recommend.run(["--impressions", "600", "--seed", "3", "--output", str(out)])
    return out


def _model(published):
    registry = open_registry(str(published / "registry.sqlite"))
    return load_version(registry, registry.latest("recommender"), serde.store_key(registry.path))


def _popular(store, n):
    """The `n` most popular items, computed here from the store's item profiles."""
    profiles = [(ItemProfile(state).popularity(clock), item) for item, state, clock in store.scan("item")]
    return {item for _, item in heapq.nlargest(n, profiles)}


def _probability(model, store, user, item, genres, at_ms, position=0):
    request = {"user_id": user, "item_id": item, "item_genres": genres, "position": position, "device": None}
    return model.predict_proba_one(impression_features(request_fields(request, at_ms, lookup(store, request))))[True]


def test_recommends_popular_items_ranked_by_the_live_model(published, tmp_path):
    store, model = open_online_store(str(published / "online.sqlite")), _model(published)
    user = store._db.execute("SELECT entity FROM profiles WHERE kind = 'user' ORDER BY clock_ms DESC").fetchone()[0]
    with serving(published, "--event_log", str(tmp_path / "served.avro"), "--epsilon", "0",
                 "--candidates", "20", "--cache_s", "0") as url:
        got = requests.get(f"{url}/recommendations/{user}", params={"k": 5}, timeout=5).json()
        extra = requests.get(f"{url}/recommendations/{user}", params={"k": 21, "candidates": "brand-new"},
                             timeout=5).json()
        newcomer = requests.get(f"{url}/recommendations/someone-new", params={"k": 3, "genres": "comedy,family"},
                                timeout=5).json()
        bad = requests.get(f"{url}/recommendations/{user}", params={"k": 0}, timeout=5)
    assert (got["source"], got["model"], got["user_id"]) == ("live", "recommender", user)
    assert got["user_clock_ms"] == store.get("user", [user])[user][1]
    items = got["items"]
    assert [i["position"] for i in items] == list(range(5)) and len({i["item_id"] for i in items}) == 5
    assert {i["item_id"] for i in items} <= _popular(store, 20)
    for item in items:  # the model's P(click) at the top slot, from the pipeline's features at that time
        expected = _probability(model, store, user, item["item_id"], item["genres"], got["served_at_ms"])
        assert item["probability"] == pytest.approx(expected, rel=1e-9)
        assert (item["propensity"], item["explored"]) == (1.0, False)
        assert item["impression_id"] == f"{got['request_id']}-{item['position']}"
    assert [i["probability"] for i in items] == sorted((i["probability"] for i in items), reverse=True)
    # The caller's candidates are ranked with the popular ones.
    assert len(extra["items"]) == 21 and "brand-new" in {i["item_id"] for i in extra["items"]}
    # A user without a profile: the genres they stated first.
    assert newcomer["user_clock_ms"] is None
    assert all({"comedy", "family"} & set(i["genres"]) for i in newcomer["items"])
    assert bad.status_code == 422


def test_exploration_draws_slots_at_random_and_logs_their_propensities(published, tmp_path):
    with serving(published, "--event_log", str(tmp_path / "served.avro"), "--epsilon", "1",
                 "--candidates", "30", "--seed", "7") as url:
        answers = [requests.get(f"{url}/recommendations/u00001", params={"k": 10}, timeout=5).json()
                   for _ in range(20)]
    # Every slot drawn uniformly among the items left: 1/30, 1/29, ...
    for answer in answers:
        assert [round(i["propensity"], 9) for i in answer["items"]] == [round(1 / (30 - p), 9) for p in range(10)]
    firsts = {a["items"][0]["item_id"] for a in answers}
    assert len(firsts) > 5  # not the model's top item every time
    logged = {r["event_id"]: r for r in fastavro.reader(open(tmp_path / "served.avro", "rb"))}
    for answer in answers:
        for item in answer["items"]:
            assert logged[item["impression_id"]]["propensity"] == pytest.approx(item["propensity"])


def test_every_served_impression_and_outcome_is_logged_and_the_learner_learns_them(published, tmp_path):
    log = tmp_path / "served.avro"
    store = open_online_store(str(published / "online.sqlite"))
    with serving(published, "--event_log", str(log), "--epsilon", "0") as url:
        predicted = requests.post(f"{url}/predict", json={"user_id": "u00001", "item_id": "i00002",
                                                          "item_genres": ["drama"], "position": 3}, timeout=5).json()
        shown = [requests.get(f"{url}/recommendations/u{u:05d}", params={"k": 4}, timeout=5).json() for u in range(30)]
        clicks = [requests.post(f"{url}/events", json={
            "event_type": "click", "impression_id": a["items"][0]["impression_id"], "user_id": a["user_id"],
            "item_id": a["items"][0]["item_id"], "event_time": a["served_at_ms"] + 5_000}, timeout=5)
            for a in shown[:10]]
        refused = requests.post(f"{url}/events", json={"event_type": "purchase", "impression_id": "x",
                                                       "user_id": "u", "item_id": "i"}, timeout=5)
    assert {c.status_code for c in clicks} == {202} and refused.status_code == 422
    records = list(fastavro.reader(open(log, "rb")))
    by_id = {r["event_id"]: r for r in records}
    assert len(records) == len(by_id) == 1 + 30 * 4 + 10
    impression = by_id[predicted["request_id"]]
    assert (impression["event_type"], impression["event_time"], impression["position"], impression["model_version"]) \
        == ("impression", predicted["served_at_ms"], 3, predicted["model_version"])
    # The features logged are those the pipeline computes for that impression at that time.
    fields = request_fields(impression, impression["event_time"], lookup(store, impression))
    assert impression["served_features"] == pytest.approx(fields["features"], rel=1e-12)
    for answer in shown:
        for item in answer["items"]:
            record = by_id[item["impression_id"]]
            assert (record["user_id"], record["item_id"], record["position"], record["model_key"]) == \
                   (answer["user_id"], item["item_id"], item["position"], "recommender")
    # The learning plane reads the log, labels what was served and learns from it.
    summary = recommend.run(["--events", str(log), "--output", str(tmp_path / "learned")])
    assert summary["counts"]["rows_read"] == len(records)
    assert summary["counts"]["outcomes_joined"] == 10
    assert summary["models"]["recommender"]["count"] == 1 + 30 * 4


def test_outcomes_need_the_api_token_when_one_is_set(published, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")
    event = {"event_type": "skip", "impression_id": "imp", "user_id": "u", "item_id": "i"}
    with serving(published, "--event_log", str(tmp_path / "served.avro"), "--api_token_file", str(token_file)) as url:
        without = requests.post(f"{url}/events", json=event, timeout=5)
        wrong = requests.post(f"{url}/events", json=event, headers={"Authorization": "Bearer nope"}, timeout=5)
        right = requests.post(f"{url}/events", json=event, headers={"Authorization": "Bearer s3cret-token"}, timeout=5)
        reading = requests.get(f"{url}/recommendations/u", timeout=5)  # reads need no token
    assert (without.status_code, wrong.status_code, right.status_code, reading.status_code) == (401, 401, 202, 200)


def test_metrics_count_requests_and_tell_the_models_age(published, tmp_path):
    with serving(published, "--event_log", str(tmp_path / "served.avro")) as url:
        for _ in range(3):
            requests.post(f"{url}/predict", json={"user_id": "u", "item_id": "i", "position": 0}, timeout=5)
        requests.post(f"{url}/predict", json={"user_id": "u"}, timeout=5)
        requests.get(f"{url}/recommendations/u", params={"k": 2}, timeout=5)
        text = requests.get(f"{url}/metrics", timeout=5).text
    values = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line and not line.startswith("#")}
    assert values['streamml_requests_total{route="/predict",status="200"}'] == 3
    assert values['streamml_requests_total{route="/predict",status="422"}'] == 1
    assert values['streamml_request_seconds_count{route="/predict"}'] == 4
    assert values['streamml_request_seconds_bucket{le="+Inf",route="/predict"}'] == 4
    assert values['streamml_served_impressions_total{source="predict"}'] == 3
    assert values['streamml_served_impressions_total{source="live"}'] == 2
    version = open_registry(str(published / "registry.sqlite")).latest("recommender")
    assert values['streamml_model_version{model="recommender",variant=""}'] == version.version
    assert 0 < values['streamml_model_age_seconds{model="recommender",variant=""}'] < 3600
    assert values["streamml_online_store_age_seconds"] > 0 and values["streamml_event_log_failures"] == 0


def test_open_inference_protocol(published, tmp_path):
    store, model = open_online_store(str(published / "online.sqlite")), _model(published)
    rows = {"user_id": ["u00001", "new-user"], "item_id": ["i00002", "i00003"],
            "item_genres": ["drama,comedy", ""], "position": [1, 4]}
    inputs = [{"name": name, "shape": [2], "datatype": "INT64" if name == "position" else "BYTES", "data": data}
              for name, data in rows.items()]
    with serving(published, "--event_log", str(tmp_path / "served.avro")) as url:
        metadata = requests.get(f"{url}/v2/models/recommender", timeout=5).json()
        ready = requests.get(f"{url}/v2/models/recommender/ready", timeout=5)
        answer = requests.post(f"{url}/v2/models/recommender/infer", json={"id": "q1", "inputs": inputs}, timeout=5)
        unknown = requests.post(f"{url}/v2/models/other/infer", json={"inputs": inputs}, timeout=5)
        short = requests.post(f"{url}/v2/models/recommender/infer", json={"inputs": inputs[:1]}, timeout=5)
        wrong = requests.post(f"{url}/v2/models/recommender/infer",
                              json={"inputs": [{**i, "datatype": "FP32"} if i["name"] == "position" else i
                                               for i in inputs]}, timeout=5)
        server = requests.get(f"{url}/v2", timeout=5).json()
    assert server["name"] == "streamml" and ready.status_code == 200
    assert {i["name"] for i in metadata["inputs"]} >= set(rows) and metadata["outputs"][0]["name"] == "probability"
    assert answer.status_code == 200, answer.text
    got = answer.json()
    assert (got["model_name"], got["id"], got["outputs"][0]["shape"]) == ("recommender", "q1", [2])
    logged = {r["event_id"]: r for r in fastavro.reader(open(tmp_path / "served.avro", "rb"))}
    request_id = got["parameters"]["request_id"]
    for i, probability in enumerate(got["outputs"][0]["data"]):
        record = logged[request_id if i == 0 else f"{request_id}-{i}"]
        genres = [g for g in rows["item_genres"][i].split(",") if g]
        assert record["item_genres"] == genres
        assert probability == pytest.approx(_probability(model, store, rows["user_id"][i], rows["item_id"][i], genres,
                                                         record["event_time"], rows["position"][i]), rel=1e-9)
    assert unknown.status_code == 404 and "recommender" in unknown.json()["error"]
    assert short.status_code == 400 and "missing inputs" in short.json()["error"]
    assert wrong.status_code == 400 and "datatype" in wrong.json()["error"]


def test_an_oversized_body_is_refused_even_without_a_length(published, tmp_path):
    with serving(published, "--event_log", str(tmp_path / "served.avro")) as url:
        chunks = (b"x" * 16_384 for _ in range(8))  # a generator: sent chunked, no Content-Length
        answer = requests.post(f"{url}/predict", data=chunks, headers={"content-type": "application/json"}, timeout=5)
        after = requests.post(f"{url}/predict", json={"user_id": "u", "item_id": "i", "position": 0}, timeout=5)
    assert answer.status_code == 413 and after.status_code == 200


def test_served_impressions_go_to_the_interactions_topic(published, kafka_bootstrap, tmp_path):
    from confluent_kafka import Consumer

    topic = f"served-{tmp_path.name}"
    with serving(published, "--event_log", f"kafka://{kafka_bootstrap}/{topic}", "--epsilon", "0") as url:
        answer = requests.get(f"{url}/recommendations/u00001", params={"k": 3}, timeout=5).json()
        requests.post(f"{url}/events", json={"event_type": "watch", "impression_id": answer["items"][0]["impression_id"],
                                             "user_id": "u00001", "item_id": answer["items"][0]["item_id"],
                                             "watch_seconds": 30.0}, timeout=5)
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": topic, "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    got = []
    wait(lambda: got.extend(m for m in consumer.consume(10, timeout=1) if m.error() is None) or len(got) >= 4, 60)
    consumer.close()
    schema = schemas.load("interaction")
    records = [fastavro.schemaless_reader(io.BytesIO(m.value()), schema) for m in got]
    assert [r["event_type"] for r in records] == ["impression"] * 3 + ["watch"]
    assert [r["event_id"] for r in records[:3]] == [i["impression_id"] for i in answer["items"]]
    assert {m.key() for m in got} == {b"u00001"} and got[0].timestamp()[1] == answer["served_at_ms"]
    assert math.isclose(records[3]["watch_seconds"], 30.0) and json.dumps(records[0]["served_features"])


def test_a_record_that_does_not_fit_the_schema_is_counted_and_costs_only_itself(tmp_path):
    from serving.eventlog import open_event_log

    log = open_event_log(str(tmp_path / "served.avro"))
    good = {"event_id": "a", "event_type": "impression", "event_time": 5, "user_id": "u", "item_id": "i",
            "position": 0}
    log.write(good)
    log.write({**good, "event_id": "b", "event_time": "yesterday"})
    assert log.failed == 1  # counted where it was written: records are encoded there
    log.write({**good, "event_id": "c"})
    log.close()
    assert log.failed == 1
    assert [r["event_id"] for r in fastavro.reader(open(tmp_path / "served.avro", "rb"))] == ["a", "c"]


def test_kafka_requests_get_their_replies(published, kafka_bootstrap, tmp_path):
    from confluent_kafka import Consumer, Producer

    from core.kafka import ensure_topic

    prefix = f"rpc-{tmp_path.name}"
    ensure_topic(kafka_bootstrap, f"{prefix}.mine")  # a reply topic of the caller's own, made by the caller
    store, model = open_online_store(str(published / "online.sqlite")), _model(published)
    with serving(published, "--event_log", str(tmp_path / "served.avro"),
                 "--kafka_requests", f"kafka://{kafka_bootstrap}/{prefix}") as url:
        producer = Producer({"bootstrap.servers": kafka_bootstrap})
        asked = {}
        for n in range(20):
            body = {"user_id": f"u{n:05d}", "item_id": f"i{n:05d}", "item_genres": ["drama"], "position": n % 10}
            asked[f"c{n}"] = body
            producer.produce(f"{prefix}.requests", key=body["user_id"].encode(), value=json.dumps(body).encode(),
                             headers=[("correlation_id", f"c{n}".encode())])
        producer.produce(f"{prefix}.requests", value=b"not json", headers=[("correlation_id", b"bad")])
        producer.produce(f"{prefix}.requests", value=json.dumps(asked["c0"]).encode(),
                         headers=[("correlation_id", b"own"), ("reply_to", f"{prefix}.mine".encode())])
        assert producer.flush(30) == 0
        consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": prefix,
                             "auto.offset.reset": "earliest"})
        consumer.subscribe([f"{prefix}.replies", f"{prefix}.mine"])
        replies = {}

        def collect():
            for m in consumer.consume(50, timeout=1):
                if m.error() is None:
                    replies[dict(m.headers())["correlation_id"].decode()] = (m.topic(), m.key(), json.loads(m.value()))
            return len(replies) >= 22

        wait(collect, 60)
        consumer.close()
        metrics = requests.get(f"{url}/metrics", timeout=5).text
    for correlation, body in asked.items():
        topic, key, reply = replies[correlation]
        assert (topic, key) == (f"{prefix}.replies", body["user_id"].encode())
        expected = _probability(model, store, body["user_id"], body["item_id"], ["drama"], reply["served_at_ms"],
                                body["position"])
        assert reply["probability"] == pytest.approx(expected, rel=1e-12)
    assert replies["bad"][2]["status"] == 422 and "json" in replies["bad"][2]["error"].lower()
    assert replies["own"][0] == f"{prefix}.mine" and "probability" in replies["own"][2]
    assert 'streamml_kafka_requests_total{outcome="ok"} 21.0' in metrics


def test_worker_processes_share_the_port(published, tmp_path):
    log = tmp_path / "served.avro"
    with serving(published, "--event_log", str(log), "--workers", "2") as url:
        answers = [requests.post(f"{url}/predict", json={"user_id": "u", "item_id": "i", "position": 0},
                                 timeout=5) for _ in range(40)]
    assert {a.status_code for a in answers} == {200}
    # Both workers appended to the one log under its lock: every impression is there once.
    assert sorted(r["event_id"] for r in fastavro.reader(open(log, "rb"))) == sorted(a.json()["request_id"]
                                                                                     for a in answers)
