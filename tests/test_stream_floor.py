"""The floor of the Kafka benchmark (`benchmarks/stream_floor.py`, the main job as one plain
loop) computes what the main job computes: on a small in-order stream through the real broker,
its scored predictions of the three models (event ids, model keys, probabilities, labels, model
steps) equal, record for record, those of the batch job over the same records."""
import json
import subprocess
import sys
import uuid

import pytest
from confluent_kafka import Producer

import simulator
from core.kafka import encode, ensure_topic, produce
from pipelines import recommend
from tests.conftest import ROOT
from tests.test_kafka import _consume_all

pytestmark = pytest.mark.kafka

WINDOW_S = 10  # as benchmarks.full_job: labels close within the stream, between served impressions


def _events(whole_seconds: bool) -> list:
    """An in-order stream with a few malformed records; with `whole_seconds`, event times cut to
    the second, so that many records share an instant (impressions and their outcomes, labels
    closing as others are served): the order within an instant is then what is tested."""
    config = simulator.SimulatorConfig(impressions=300, users=20, items=40, seed=5, late_fraction=0.0,
                                       attribution_window_ms=WINDOW_S * 1000)
    events = list(simulator.generate(config))
    if whole_seconds:
        events = [dict(e, event_time=e["event_time"] - e["event_time"] % 1000) if e["event_time"] > 0 else e
                  for e in events]
    return events


@pytest.mark.parametrize("whole_seconds", [False, True], ids=["ms", "whole-seconds"])
def test_floor_predictions_equal_the_batch_jobs(kafka_bootstrap, tmp_path, whole_seconds):
    events = _events(whole_seconds)
    path = tmp_path / "events.avro"
    simulator.write_avro(events, str(path))
    topic, out = f"floor-{uuid.uuid4().hex[:8]}", f"floor-out-{uuid.uuid4().hex[:8]}"
    ensure_topic(kafka_bootstrap, topic, 3)
    ensure_topic(kafka_bootstrap, out, 1)
    produce(events, kafka_bootstrap, topic, "interaction", "user_id")
    # A far-ahead record on every partition moves the floor's watermark past every label, as
    # benchmarks.full_job ends a run (an impression never labelled: it sends nothing).
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    ahead = max(e["event_time"] for e in events) + 600_000
    for p in range(3):
        producer.produce(topic, partition=p, value=encode(dict(events[0], event_id=f"tick-{p}", event_time=ahead),
                                                          "interaction"))
    producer.flush(10)

    floor = subprocess.Popen([sys.executable, "-m", "benchmarks.stream_floor", "--bootstrap", kafka_bootstrap,
                              "--topic", topic, "--out", out, "--window_s", str(WINDOW_S)],
                             cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        batch = recommend.run(["--events", str(path), "--output", str(tmp_path / "batch"),
                               "--attribution_minutes", str(WINDOW_S / 60)])
        expected = sorted(json.dumps(json.loads(line), sort_keys=True)
                          for line in (tmp_path / "batch" / "predictions.jsonl").read_text().splitlines())
        assert len(expected) == 3 * batch["counts"]["predictions"] > 600
        got = _consume_all(kafka_bootstrap, out, len(expected), "prediction", timeout_s=30)
    finally:
        floor.terminate()
        _, log = floor.communicate(timeout=30)
    assert floor.returncode == 0, log
    assert sorted(json.dumps(v, sort_keys=True) for _, v in got) == expected
    # Keyed by model, as the job's PredictionsToKafka keys them.
    assert {k.decode() for k, _ in got} == {"recommender", "no_features", "popularity"}


def test_floor_events_are_simulated_in_order():
    """What 'in order' means here: no record comes before one with an earlier event time, so the
    stream has no late record and the floor uses every record the batch job uses (a malformed
    one with a negative time is dropped by both: late in the stream, invalid in the file)."""
    for whole_seconds in (False, True):
        times = [e["event_time"] for e in _events(whole_seconds) if e["event_time"] >= 0]
        assert times == sorted(times)
