"""The Confluent wire format against a real schema registry (scripts/schema_registry.sh: Apicurio
Registry's Confluent API): decoding evolved writer schemas, bad values as reasons, an unreachable
registry as an error to retry, and the main job on the real broker in wire format."""
import json
import pickle
import threading
import time
import uuid

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

import simulator
from core.kafka import KafkaRecord, ensure_topic, produce, schema_text, value_encoder
from core.payloads import RegistryPayloads
from pipelines import recommend
from simulator.world import NOT_SERVED

pytestmark = pytest.mark.kafka

READER = json.loads(schema_text("interaction"))
EVENT = {"event_id": "imp-1", "event_type": "impression", "event_time": 1_700_000_000_000,
         "user_id": "u1", "item_id": "i1", "item_genres": ["drama"], "impression_id": None,
         "position": 2, "device": "tv", "watch_seconds": None, **NOT_SERVED}


def _serialize(registry, writer_schema: dict, record: dict, topic: str) -> bytes:
    serializer = AvroSerializer(SchemaRegistryClient({"url": registry}), json.dumps(writer_schema),
                                conf={"auto.register.schemas": True})
    return serializer(record, SerializationContext(topic, MessageField.VALUE))


def _record(value: bytes, topic="t", offset=0) -> KafkaRecord:
    return KafkaRecord(topic, 0, offset, None, value, 0)


def test_evolved_writer_schemas_resolve_to_the_reader_schema(schema_registry):
    topic = f"sr-{uuid.uuid4().hex[:8]}"
    payloads = RegistryPayloads(schema_registry, "interaction")

    # A writer with a field the reader does not know: dropped.
    extra = {**READER, "fields": READER["fields"] + [{"name": "session_id", "type": "string", "default": ""}]}
    value = _serialize(schema_registry, extra, {**EVENT, "session_id": "s-9"}, topic + "-extra")
    row = payloads.row(_record(value, topic + "-extra", 3))
    assert (row.event_id, row.event_time, row.origin) == ("imp-1", EVENT["event_time"], ((topic + "-extra", 0, 3, 3),))
    assert row.fields == EVENT

    # A writer without a field the reader has a default for: the default.
    fewer = {**READER, "fields": [f for f in READER["fields"] if f["name"] != "device"]}
    value = _serialize(schema_registry, fewer, {k: v for k, v in EVENT.items() if k != "device"}, topic + "-fewer")
    assert value[0] == 0
    assert payloads.row(_record(value)).fields == {**EVENT, "device": None}

    # The project's own schema, and a copy that went through pickling (as into a DoFn).
    value = _serialize(schema_registry, READER, EVENT, topic)
    assert pickle.loads(pickle.dumps(payloads)).row(_record(value)).fields == EVENT


def test_bad_values_are_reasons(schema_registry):
    topic = f"sr-{uuid.uuid4().hex[:8]}"
    good = _serialize(schema_registry, READER, EVENT, topic)
    payloads = RegistryPayloads(schema_registry, "interaction")
    unknown_id = b"\x00" + (2**31 - 7).to_bytes(4, "big") + good[5:]
    cases = {
        b"\x01" + good[1:]: "magic byte 1, not 0",
        b"\x02not avro": "magic byte 2, not 0",
        good[:3]: "3 bytes, shorter than the 5-byte header",
        b"": "0 bytes",
        unknown_id: f"unknown writer schema id {2**31 - 7}",
        good[:9]: "undecodable interaction record (writer schema id",
        good[:5] + b"\xff" * 12: "undecodable interaction record (writer schema id",
    }
    for value, reason in cases.items():
        with pytest.raises(ValueError) as caught:
            payloads.row(_record(value))
        assert reason in str(caught.value), (value, str(caught.value))
    # Fields the row needs but the record lacks: the same reason as for schemaless values.
    with pytest.raises(ValueError, match="undecodable interaction record: .*event_id"):
        payloads.row(_record(_serialize(schema_registry, READER, {**EVENT, "event_id": ""}, topic)))


def test_an_unreachable_registry_is_not_the_records_fault(schema_registry):
    value = _serialize(schema_registry, READER, EVENT, f"sr-{uuid.uuid4().hex[:8]}")
    nobody = RegistryPayloads("http://127.0.0.1:9/apis/ccompat/v7", "interaction")
    with pytest.raises(ConnectionError, match="unreachable"):
        nobody.row(_record(value))


def test_writers_registering_one_new_subject_at_once_all_write(schema_registry):
    """A job's parallel workers register a new output subject at the same moment: Apicurio answers
    all but one with 409 "already exists" (or 500 when two inserts of the content collide in its
    database); every writer still writes, with the one schema id."""
    topic = f"sr-{uuid.uuid4().hex[:8]}"
    encoders = [value_encoder("dead_letter", topic, schema_registry) for _ in range(16)]
    start, values, errors = threading.Barrier(len(encoders)), [], []

    def write(encode):
        start.wait()
        try:
            values.append(encode({"stage": "s", "reason": "r", "payload": b"x"}))
        except Exception as e:  # noqa: BLE001  (the test reports it)
            errors.append(e)

    threads = [threading.Thread(target=write, args=(e,)) for e in encoders]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len({v[:5] for v in values}) == 1 and values[0][0] == 0


def _consume_wire(bootstrap, registry, topic, expected, timeout_s=60):
    """All records of `topic` (from the first offsets, by assignment), each value checked to be in
    wire format and decoded with its writer schema from the registry; until `expected` are in."""
    deserializer = AvroDeserializer(SchemaRegistryClient({"url": registry}))
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{uuid.uuid4().hex}"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        out, deadline = [], time.monotonic() + timeout_s
        while len(out) < expected:
            assert time.monotonic() < deadline, f"{topic}: read {len(out)} of {expected} records"
            for m in consumer.consume(500, timeout=0.5):
                if m.error() is None:
                    assert m.value()[0] == 0, m.value()[:8]
                    out.append(deserializer(m.value(), SerializationContext(topic, MessageField.VALUE)))
        return out
    finally:
        consumer.close()


def test_main_job_in_wire_format_equals_the_batch_job(kafka_bootstrap, schema_registry, tmp_path):
    events = list(simulator.generate(simulator.SimulatorConfig(impressions=250, seed=13, late_fraction=0.0)))
    path = tmp_path / "events.avro"
    simulator.write_avro(events, str(path))
    topic, prefix = f"sr-{uuid.uuid4().hex[:8]}", f"out-{uuid.uuid4().hex[:8]}"
    ensure_topic(kafka_bootstrap, topic, 3)
    produce(events, kafka_bootstrap, topic, "interaction", "user_id", registry=schema_registry)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for garbage in (b"\x02schemaless?", b"\x00\x00", b"\x00\x7f\xff\xff\xf0body"):
        producer.produce(topic, key=b"bad", value=garbage, timestamp=events[-1]["event_time"])
    assert producer.flush(10) == 0

    batch = recommend.run(["--events", str(path), "--output", str(tmp_path / "batch")])
    stream = recommend.run(["--source", "kafka", "--bootstrap", kafka_bootstrap, "--topic", topic,
                            "--group", "job", "--stop_at_end", "--streaming", "--kafka_out", prefix,
                            "--schema_registry", schema_registry, "--output", str(tmp_path / "stream")])
    lines = lambda name: sorted((tmp_path / name / "predictions.jsonl").read_text().splitlines())  # noqa: E731
    assert lines("stream") == lines("batch")
    garbage_counts = {"dead_letters.DecodeAvro": 3, "rows_unreadable": 3}
    expected_counts = {k: batch["counts"].get(k, 0) + garbage_counts.get(k, 0)
                       for k in {*batch["counts"], *garbage_counts}}
    assert stream["counts"] == expected_counts
    assert {k: v for k, v in stream.items() if k != "counts"} == \
        {k: v for k, v in batch.items() if k != "counts"}

    predictions = _consume_wire(kafka_bootstrap, schema_registry, f"{prefix}.predictions",
                                3 * batch["counts"]["predictions"])
    assert sorted(json.dumps(v, sort_keys=True) for v in predictions) == \
        sorted(json.dumps(json.loads(line), sort_keys=True) for line in lines("batch"))
    dead = sum(v for k, v in expected_counts.items() if k.startswith("dead_letters."))
    letters = _consume_wire(kafka_bootstrap, schema_registry, f"{prefix}.dead_letters", dead)
    decode = {d["payload"]: d["reason"] for d in letters if d["stage"] == "DecodeAvro"}
    assert sorted(decode) == sorted([b"\x02schemaless?", b"\x00\x00", b"\x00\x7f\xff\xff\xf0body"])
    assert decode[b"\x02schemaless?"] == "not Confluent wire format: magic byte 2, not 0"
    assert decode[b"\x00\x00"].startswith("not Confluent wire format: 2 bytes")
    assert decode[b"\x00\x7f\xff\xff\xf0body"].startswith(f"unknown writer schema id {0x7ffffff0}")
    assert _consume_wire(kafka_bootstrap, schema_registry, f"{prefix}.metrics", 1)
    subjects = SchemaRegistryClient({"url": schema_registry}).get_subjects()
    assert {f"{topic}-value", *(f"{prefix}.{t}-value" for t in ("predictions", "dead_letters", "metrics"))} \
        <= set(subjects)
