"""The live dashboard (`GET /dashboard`) in a real browser, Debian's chromium driven headless by
Playwright, against a real serving process; and the figures behind it on `/metrics`, parsed
back with the Prometheus client's parser, from a real Kafka broker for the alerts and the
consumer lag."""
import json
import math
import shutil
import uuid

import pytest
import requests
from confluent_kafka import Producer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from core import kafka
from core.kafka import commit_at_least, ensure_topic
from pipelines import recommend, rollback
from stores.experiments import open_experiment_store
from stores.registry import open_registry
from tests.servers import serving, wait

# Every panel the issue lists, by the /metrics gauge it shows.
PANELS = ["streamml_model_version", "streamml_model_age_seconds", "streamml_model_window_logloss",
          "streamml_model_window_rocauc", "streamml_model_window_ctr", "streamml_model_window_calibration",
          "streamml_model_label_delay_seconds", "streamml_recent_requests_per_second",
          "streamml_recent_latency_seconds", "streamml_kafka_consumer_lag"]
CANARY = {"name": "ranker-canary", "kind": "canary", "control": "champion",
          "variants": {"champion": {"model": "recommender"}, "canary": {"model": "no_features"}}}
IMPRESSION = {"user_id": "u1", "item_id": "i1", "item_genres": ["drama"], "position": 0, "device": "tv"}


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """The main job's output folder: it published its models and profiles there."""
    out = tmp_path_factory.mktemp("published")
    recommend.run(["--impressions", "1500", "--seed", "3", "--output", str(out)])
    return out


def scrape(url) -> dict:
    """/metrics as {series: value}, a series keyed as the page keys it: name{label="value",...}."""
    text = requests.get(f"{url}/metrics", timeout=5).text
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            values[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return values


def shown(page) -> dict:
    return page.evaluate("""() => ({seq: window.__seq, values: Object.fromEntries(
        [...document.querySelectorAll("[data-series][data-value]")].map(e => [e.dataset.series, e.dataset.value]))})""")


def same_moment(page, url):
    """(what the page shows, /metrics) of the same snapshot: scraped until their seq agree."""
    for _ in range(50):
        page_now, scraped = shown(page), scrape(url)
        if scraped["streamml_dashboard_seq"] == page_now["seq"]:
            return page_now["values"], scraped
        page.wait_for_timeout(100)
    raise AssertionError("the page and /metrics never showed the same snapshot")


def equal(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def test_every_panel_equals_metrics_and_new_events_show_up(published, browser, tmp_path):
    served = tmp_path / "published"
    shutil.copytree(published, served)  # this test rolls its registry back
    alerts, spec, store = tmp_path / "alerts.jsonl", tmp_path / "canary.json", tmp_path / "experiments.sqlite"
    spec.write_text(json.dumps(CANARY))
    open_experiment_store(str(store)).put("ranker-canary", {"weight": 0.25, "stage": 2}, expected_version=0)
    with serving(served, "--event_log", str(tmp_path / "served.avro"), "--alerts", str(alerts),
                 "--experiment", str(spec), "--experiment_store", str(store)) as url:
        for _ in range(40):  # traffic, for the requests/s and latency panels
            assert requests.post(f"{url}/predict", json=IMPRESSION, timeout=5).status_code == 200
        wait(lambda: scrape(url)["streamml_recent_requests_per_second"] > 0)  # in a snapshot taken after them
        page = browser.new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{url}/dashboard")
        page.wait_for_function("window.__seq > 0")

        values, scraped = same_moment(page, url)
        assert {series.split("{")[0] for series in values} >= set(PANELS)
        for series, value in values.items():
            assert equal(float(value), scraped[series]), (series, value, scraped[series])
        # Each variant's model, and the experiment's state and stage.
        assert {'streamml_model_version{model="recommender",variant="champion"}',
                'streamml_model_version{model="no_features",variant="canary"}'} <= set(values)
        assert values["streamml_experiment_canary_weight"] == "0.25"
        state = page.get_attribute("#experiment", "data-series")
        assert state == 'streamml_experiment_state{experiment="ranker-canary",kind="canary",stage="2",state="running"}'
        assert scraped[state] == 1
        # The figures are the newest version's, as the learner published them.
        latest = open_registry(str(served / "registry.sqlite")).latest("recommender")
        model = '{model="recommender",variant="champion"}'
        assert scraped[f"streamml_model_version{model}"] == latest.version
        assert scraped[f"streamml_model_window_logloss{model}"] == latest.metrics["window_logloss"]
        assert scraped[f"streamml_model_window_labels{model}"] == min(latest.step, 2000)
        assert scraped["streamml_recent_requests_per_second"] > 0
        assert 0 < scraped['streamml_recent_latency_seconds{quantile="0.50"}'] \
            <= scraped['streamml_recent_latency_seconds{quantile="0.99"}'] < 1
        assert math.isnan(scraped["streamml_kafka_consumer_lag"])  # not watched: unknown, not 0

        # New events: an alert the learner wrote, and a manual rollback.
        with open(alerts, "a") as f:
            f.write(json.dumps({"signal": "alert", "kind": "drift", "model_key": "recommender", "event_time": 1,
                                "reason": "residual drift", "version": None}) + "\n")
        page.wait_for_selector("li.event[data-kind=drift]", timeout=10_000)
        version = rollback.run(["--registry", str(served / "registry.sqlite"), "--to", "1", "--reason", "test"])
        page.wait_for_selector("li.event[data-kind=rollback]", timeout=10_000)
        assert f"v{version.version}: rolled back to the state of v1 (manual: test)" in page.inner_text("#events")
        values, scraped = same_moment(page, url)
        assert scraped[f"streamml_model_version{model}"] == version.version
        assert (scraped['streamml_alerts{kind="drift"}'], scraped['streamml_alerts{kind="rollback"}']) == (1, 1)
        for series, value in values.items():
            assert equal(float(value), scraped[series]), (series, value, scraped[series])
        page.close()
    assert errors == []


def test_alerts_from_kafka_and_the_learners_consumer_lag(published, kafka_bootstrap, tmp_path):
    topic = f"dashboard-{uuid.uuid4().hex[:8]}"
    ensure_topic(kafka_bootstrap, topic, partitions=2)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for i in range(10):
        producer.produce(topic, value=b"x", partition=i % 2)
    alert = {"signal": "alert", "kind": "quarantine", "model_key": "recommender", "event_time": 5,
             "reason": "quarantined: source u7", "version": 3}
    producer.produce(f"{topic}.alerts", value=kafka.encode(alert, "alert"))
    producer.produce(f"{topic}.alerts", value=b"not an alert")  # skipped, not fatal
    producer.flush(10)
    commit_at_least(kafka_bootstrap, "learner", topic, {0: 2, 1: 3})  # 5 of 10 committed
    with serving(published, "--event_log", str(tmp_path / "served.avro"),
                 "--alerts", f"kafka://{kafka_bootstrap}/{topic}.alerts",
                 "--consumer_lag", f"kafka://{kafka_bootstrap}/{topic}", "--consumer_group", "learner") as url:
        wait(lambda: scrape(url).get('streamml_alerts{kind="quarantine"}') == 1, timeout_s=20)
        assert scrape(url)["streamml_kafka_consumer_lag"] == 5
        commit_at_least(kafka_bootstrap, "learner", topic, {0: 5, 1: 4})
        wait(lambda: scrape(url)["streamml_kafka_consumer_lag"] == 1, timeout_s=20)
    c = kafka.consumer(kafka_bootstrap, "learner")  # the server only read the group's offsets
    assert [tp.offset for tp in c.committed([TopicPartition(topic, 0), TopicPartition(topic, 1)], timeout=10)] == [5, 4]
    c.close()
