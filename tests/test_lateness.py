"""The lateness policy on the real broker: a record further behind its partition's latest event
time than the allowed lateness is a `late` dead letter at the source; everything else is
processed exactly as a batch run over the same records without the late ones. Event time is the
payload's: records stamped at sending give the results of records stamped with event time."""
import io
import json
import uuid

import fastavro
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

import schemas
import simulator
from core.kafka import ensure_topic, produce
from pipelines import recommend

pytestmark = pytest.mark.kafka
ALLOWED_S = 60
WINDOWS = ["--attribution_minutes", "5", "--metrics_minutes", "5"]


def _events():
    """Simulated interactions (40 minutes), 5% of outcomes 5-10 minutes late, a duplicate impression (on
    time: the same in batch), and an impression sent last but shown ten minutes before the end
    (a phone that was offline)."""
    config = simulator.SimulatorConfig(impressions=400, users=40, seed=21, late_fraction=0.05, mean_gap_ms=6_000,
                                       attribution_window_ms=5 * 60_000)
    events = list(simulator.generate(config))
    impressions = [i for i, e in enumerate(events) if e["event_type"] == "impression"]
    events.insert(impressions[10] + 1, dict(events[impressions[10]]))
    offline = next(e for e in events if e["event_type"] == "impression"
                   and e["event_time"] < events[-1]["event_time"] - 600_000)
    return events + [dict(offline, event_id="offline-impression")]


def _late_ids(bootstrap, topic, total):
    """The policy, applied by hand to what the broker holds: per partition in offset order."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{uuid.uuid4().hex}"})
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(3)])
    by_partition, read, polls = {}, 0, 0
    while read < total:
        polls += 1
        assert polls < 60, f"{topic}: read {read} of {total} records"
        for m in consumer.consume(500, timeout=1):
            record = fastavro.schemaless_reader(io.BytesIO(m.value()), schemas.load("interaction"))
            by_partition.setdefault(m.partition(), []).append((m.offset(), record))
            read += 1
    consumer.close()
    late = set()
    for records in by_partition.values():
        latest = None
        for _, r in sorted(records, key=lambda o: o[0]):
            if latest is not None and r["event_time"] < latest - ALLOWED_S * 1000:
                late.add(r["event_id"])
            latest = r["event_time"] if latest is None else max(latest, r["event_time"])
    return late


def _stream(bootstrap, topic, out):
    return recommend.run(["--source", "kafka", "--bootstrap", bootstrap, "--topic", topic, "--group", "job",
                          "--stop_at_end", "--streaming", "--allowed_lateness_s", str(ALLOWED_S),
                          "--output", str(out)] + WINDOWS)


def _predictions(out):
    return sorted((out / "predictions.jsonl").read_text().splitlines())


def test_late_records_are_dead_letters_and_the_rest_equals_batch(kafka_bootstrap, tmp_path):
    events = _events()
    by_event_time, by_send_time = (f"late-{uuid.uuid4().hex[:8]}" for _ in range(2))
    for topic in (by_event_time, by_send_time):
        ensure_topic(kafka_bootstrap, topic, 3)
    produce(events, kafka_bootstrap, by_event_time, "interaction", "user_id")
    produce(events, kafka_bootstrap, by_send_time, "interaction", "user_id", time_field=None)

    late = _late_ids(kafka_bootstrap, by_event_time, len(events))
    assert "offline-impression" in late and len(late) > 3, late  # late outcomes and the offline impression

    on_time = tmp_path / "on_time.avro"
    simulator.write_avro([e for e in events if e["event_id"] not in late], str(on_time))
    batch = recommend.run(["--events", str(on_time), "--output", str(tmp_path / "batch")] + WINDOWS)
    stream = _stream(kafka_bootstrap, by_event_time, tmp_path / "stream")
    sent = _stream(kafka_bootstrap, by_send_time, tmp_path / "sent")

    assert _predictions(tmp_path / "stream") == _predictions(tmp_path / "batch")
    dead = [json.loads(line) for line in (tmp_path / "stream" / "dead_letters.jsonl").read_text().splitlines()]
    late_letters = [d for d in dead if d["stage"] == "ReadFromKafka"]
    assert all(d["reason"].startswith("late: ") for d in late_letters)
    assert len(late_letters) == len(late)
    counts = dict(stream["counts"])
    assert counts.pop("dead_letters.ReadFromKafka") == len(late)
    assert counts.pop("rows_unreadable") == len(late)
    assert counts.pop("rows_read") == len(events) - len(late)
    assert counts == {k: v for k, v in batch["counts"].items() if k != "rows_read"}
    assert stream["models"] == batch["models"]
    # Stamped at sending, the same records give the same results: time is the payload's.
    assert sent == stream and _predictions(tmp_path / "sent") == _predictions(tmp_path / "stream")


def test_a_record_from_the_future_is_a_dead_letter_not_the_partitions_new_clock():
    """A record whose event time is further ahead of its Kafka timestamp (when it was sent) than
    the allowed clock skew would make every later record of its partition late: it is a
    `future` dead letter instead, and moves nothing."""
    from core.kafka import KafkaRecord, encode
    from core.payloads import AvroPayloads
    from core.records import DeadLetter, Row
    from transforms.io.kafka_read import _ReadTopicDoFn

    reader = _ReadTopicDoFn("127.0.0.1:1", "g", True, 500, payloads=AvroPayloads("interaction"),
                            allowed_lateness_ms=60_000, max_skew_ms=3_600_000)
    event = _events()[0]
    sent_at = event["event_time"] + 5_000

    def read(event_time):
        value = encode(dict(event, event_time=event_time), "interaction")
        return reader._decoded(KafkaRecord("t", 0, 7, None, value, sent_at), behind=None)

    on_time, event_time = read(event["event_time"])
    assert isinstance(on_time, Row) and event_time == event["event_time"]
    skewed, _ = read(sent_at + 3_600_000)  # a producer's clock an hour fast: still used
    assert isinstance(skewed, Row)
    future, event_time = read(sent_at + 86_400_000)
    assert isinstance(future, DeadLetter) and event_time is None
    assert (future.stage, future.reason.split(":")[0], future.source) == ("ReadFromKafka", "future", "t/0@7")
