"""Retraining on a window of recent history: once, and when a signal arrives on a Kafka topic."""
import json
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from core.kafka import ensure_topic, value_encoder
from core.records import Alert
from pipelines import retrain
from pipelines.console import UserError
from stores.registry import open_registry


def _flags(history, out):
    return ["--events", str(history), "--registry", str(out / "registry.sqlite"), "--output", str(out / "runs"),
            "--window_hours", "0.75", "--holdout_hours", "0.2"]


def test_once_learns_the_window_before_the_newest_hours(history, tmp_path):
    [done] = retrain.run(_flags(history, tmp_path))
    newest = retrain.newest_impression(str(history))
    lineage = done["lineage"]
    assert lineage["split_ms"] == newest - 720_000 and lineage["train_from_ms"] == newest - 720_000 - 2_700_000
    version = open_registry(str(tmp_path / "registry.sqlite")).latest("recommender", "candidate")
    assert version.version == done["version"] and version.metrics["held_out"]["examples"] > 0
    with pytest.raises(UserError, match="nothing to learn"):  # shorter than the attribution window: no label known
        retrain.run(_flags(history, tmp_path) + ["--window_hours", "0.4"])


def test_a_retrain_signal_makes_one_run_and_is_committed(history, tmp_path, kafka_bootstrap):
    topic, group = f"signals-{uuid.uuid4().hex[:8]}", f"retrain-{uuid.uuid4().hex[:8]}"
    ensure_topic(kafka_bootstrap, topic, partitions=1)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    # JSON signals, and what a guarded pipelines.recommend writes to PREFIX.alerts: Avro alerts,
    # encoded as its WriteToKafka encodes them.
    alert = value_encoder("alert", topic)
    for value in (b"not json", json.dumps({"signal": "alert", "reason": "latency"}).encode(),
                  json.dumps({"signal": "retrain", "reason": "log loss decayed"}).encode(),
                  alert(Alert("alert", "poisoning", "recommender", 5, "source u1 quarantined", 7).to_avro()),
                  alert(Alert("retrain", "drift", "recommender", 6, "drift: log_loss").to_avro())):
        producer.produce(topic, value)
    producer.flush(10)
    runs = retrain.run(_flags(history, tmp_path) + ["--on", f"kafka://{kafka_bootstrap}/{topic}", "--group", group,
                                                    "--max_runs", "1"])
    assert [r["reason"] for r in runs] == ["log loss decayed; drift: log_loss"] and runs[0]["version"] == 1
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": group})
    [committed] = consumer.committed([TopicPartition(topic, 0)], timeout=10)
    consumer.close()
    assert committed.offset == 5  # acted on: a restarted retrainer does not run it again
