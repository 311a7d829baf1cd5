"""The learning plane in an experiment: each variant learns from the impressions it served
(and all learn from history no variant served), a variant with a factory is learned from
scratch and published, and on Kafka the consumer group's offsets still reach the end."""
import json
import os
import pathlib
import signal
import subprocess
import sys
import time
import uuid

import pytest
from confluent_kafka import Consumer, TopicPartition

import simulator
from core.kafka import ensure_topic, produce
from experiments.assignment import Split, bucket
from pipelines import recommend
from stores.registry import open_registry

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXPERIMENT = {"name": "ab", "kind": "ab", "control": "champion", "weights": {"champion": 0.5, "challenger": 0.5},
              "variants": {"champion": {"model": "recommender"},
                           "challenger": {"model": "challenger", "factory": "models.zoo:recommender"}}}


def _served_events(n: int, seed: int) -> tuple[list, dict]:
    """Simulated interactions whose impressions after the first third were served by the
    experiment's variants (as the serving process logs them); the count of each one's."""
    events = list(simulator.generate(simulator.SimulatorConfig(impressions=n, seed=seed, late_fraction=0.0,
                                                               malformed_fraction=0.0)))
    split = Split(EXPERIMENT["weights"], "champion")
    impressions = [e for e in events if e["event_type"] == "impression"]
    served = {"recommender": 0, "challenger": 0, None: 0}
    cut = impressions[len(impressions) // 3]["event_time"]
    for e in impressions:
        if e["event_time"] >= cut:
            b = bucket(e["user_id"], "ab")
            variant = split.variant(b)
            e.update(model_key=EXPERIMENT["variants"][variant]["model"], model_version=1, experiment="ab",
                     variant=variant, bucket=b, assignment_probability=0.5)
        served[e["model_key"]] += 1
    return events, served


def test_each_variant_learns_from_what_it_served(tmp_path):
    events, served = _served_events(1500, seed=21)
    path, spec = tmp_path / "events.avro", tmp_path / "ab.json"
    simulator.write_avro(events, str(path))
    spec.write_text(json.dumps(EXPERIMENT))
    summary = recommend.run(["--events", str(path), "--output", str(tmp_path / "out"), "--experiment", str(spec),
                             "--no_baselines"])
    predicted = {}
    for line in open(tmp_path / "out" / "predictions.jsonl"):
        p = json.loads(line)
        predicted[p["model_key"]] = predicted.get(p["model_key"], 0) + 1
    assert served["recommender"] > 200 and served["challenger"] > 200
    # History (no variant served it) goes to both; a served impression to its variant only.
    assert predicted == {"recommender": served[None] + served["recommender"],
                         "challenger": served[None] + served["challenger"]}
    registry = open_registry(str(tmp_path / "out" / "registry.sqlite"))
    for key in ("recommender", "challenger"):
        assert registry.latest(key).step == summary["models"][key]["count"] == predicted[key]


def _committed(bootstrap, topic, group) -> dict:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        return {tp.partition: max(tp.offset, 0) for tp in consumer.committed(
            [TopicPartition(topic, p) for p in range(3)], timeout=10)}
    finally:
        consumer.close()


@pytest.mark.kafka
def test_on_kafka_the_offsets_of_what_one_variant_skips_are_committed(kafka_bootstrap, tmp_path):
    """An endless job commits as results are delivered, per model lane: a variant never sees
    the impressions the other served, and its lane must still move past them (else the group's
    offsets would stop at the first impression a variant served)."""
    events, _ = _served_events(600, seed=22)  # a third history, then served by the variants
    topic, prefix = f"exp-{uuid.uuid4().hex[:8]}", f"out-{uuid.uuid4().hex[:8]}"
    ensure_topic(kafka_bootstrap, topic, 3)
    total = produce(events, kafka_bootstrap, topic, "interaction", "user_id")
    spec = tmp_path / "ab.json"
    spec.write_text(json.dumps(EXPERIMENT))
    job = [sys.executable, "-m", "pipelines.recommend", "--source", "kafka", "--bootstrap", kafka_bootstrap,
           "--topic", topic, "--group", "exp", "--streaming", "--kafka_out", prefix, "--experiment", str(spec),
           "--no_baselines", "--attribution_minutes", "1", "--metrics_minutes", "1", "--output", str(tmp_path / "out")]
    process = subprocess.Popen(job, cwd=ROOT, stdout=open(tmp_path / "job.log", "w"), stderr=subprocess.STDOUT,
                               start_new_session=True)
    try:  # the last two minutes of event time wait for lateness and labels; without the skipped lanes
        # the commits stop at the first served impression, a third of the way
        deadline = time.monotonic() + 180
        while sum(_committed(kafka_bootstrap, topic, "exp").values()) < 0.5 * total:
            assert process.poll() is None, (tmp_path / "job.log").read_text()[-3000:]
            assert time.monotonic() < deadline, _committed(kafka_bootstrap, topic, "exp")
            time.sleep(1)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
