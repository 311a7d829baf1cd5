"""Kafka in and out on the project's real broker: source, decoding, sinks, and the main job."""
import io
import json
import os
import signal
import subprocess
import sys
import time
import uuid

import apache_beam as beam
import fastavro
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

import schemas
import simulator
from core.kafka import ensure_topic, produce
from core.records import DeadLetter
from pipelines import recommend
from pipelines.options import pipeline_options
from tests.conftest import ROOT
from transforms.io.kafka import DecodeAvro, WriteToKafka
from transforms.io.kafka_read import ReadFromKafka

pytestmark = pytest.mark.kafka


def _topic(kafka_bootstrap, partitions=3):
    name = f"test-{uuid.uuid4().hex[:8]}"
    ensure_topic(kafka_bootstrap, name, partitions)
    return name


def _consume_all(bootstrap, topic, expected, schema, timeout_s=60):
    """The records of `topic` from its first offsets, by assignment (no consumer-group
    rebalance): reads until `expected` records are in, then on to the end offsets it then
    finds (so a caller's exact count sees extra copies too). Fails, with what it read, if
    `expected` records are not there within `timeout_s`."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{uuid.uuid4().hex}"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        out, read_to, ends = [], {}, None
        deadline = time.monotonic() + timeout_s
        while True:
            if len(out) >= expected:
                if ends is None:
                    ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                            for p in partitions}
                if all(read_to.get(p, low) >= high for p, (low, high) in ends.items()):
                    return out
            assert time.monotonic() < deadline, (
                f"{topic}: read {len(out)} of {expected} records in {timeout_s} s (next offset per "
                f"partition {read_to}); the first: {[v for _, v in out[:3]]}")
            for m in consumer.consume(500, timeout=0.5):
                if m.error() is None:
                    out.append((m.key(), fastavro.schemaless_reader(io.BytesIO(m.value()), schemas.load(schema))))
                    read_to[m.partition()] = m.offset() + 1
    finally:
        consumer.close()


def _events(n=300, seed=5):
    """Simulated interactions without late ones: with them, the lateness policy decides what a
    stream uses (tests/test_lateness.py), and a batch run over the file uses all."""
    return list(simulator.generate(simulator.SimulatorConfig(impressions=n, seed=seed, late_fraction=0.0)))


@pytest.mark.parametrize("mode", [[], ["--streaming"]])
def test_source_reads_every_partition_and_dead_letters_bad_bytes(kafka_bootstrap, mode):
    topic = _topic(kafka_bootstrap)
    events = _events()
    produce(events, kafka_bootstrap, topic, "interaction", "user_id")
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    producer.produce(topic, key=b"bad", value=b"\x02not avro", timestamp=events[-1]["event_time"])
    producer.flush(10)
    with TestPipeline(options=pipeline_options(mode)) as p:
        decoded = (p | ReadFromKafka(kafka_bootstrap, [topic], "g", stop_at_end=True)
                   | DecodeAvro("interaction"))
        assert_that(decoded.rows | beam.Map(lambda r: r.event_id),
                    equal_to([e["event_id"] for e in events]))
        assert_that(decoded.dead_letters | beam.Map(lambda d: (d.stage, d.payload, d.source.split("@")[0][:-2])),
                    equal_to([("DecodeAvro", b"\x02not avro", topic)]), label="Dead")


def test_sink_confirms_delivery_and_keys_records(kafka_bootstrap):
    topic = _topic(kafka_bootstrap)
    letters = [DeadLetter(f"stage{i % 3}", f"r{i}", bytes([i]), event_time=i) for i in range(50)]
    with TestPipeline(options=pipeline_options([])) as p:
        p | beam.Create(letters) | WriteToKafka(kafka_bootstrap, topic, "dead_letter", key=lambda d: d.stage)
    got = _consume_all(kafka_bootstrap, topic, 50, "dead_letter")
    assert sorted((k.decode(), v["reason"]) for k, v in got) == sorted((d.stage, d.reason) for d in letters)


def test_sink_fails_loudly_when_delivery_fails(kafka_bootstrap):
    with pytest.raises(Exception, match="delivery"):
        with TestPipeline(options=pipeline_options([])) as p:
            (p | beam.Create([DeadLetter("s", "r", b"x")])
             | WriteToKafka(kafka_bootstrap, "not a valid topic!", "dead_letter", key=lambda d: d.stage))


def test_main_job_on_kafka_equals_the_batch_job_on_a_file(kafka_bootstrap, tmp_path):
    events = _events(500, seed=11)
    path = tmp_path / "events.avro"
    simulator.write_avro(events, str(path))
    topic = _topic(kafka_bootstrap)
    produce(events, kafka_bootstrap, topic, "interaction", "user_id")
    prefix = f"out-{uuid.uuid4().hex[:8]}"

    batch = recommend.run(["--events", str(path), "--output", str(tmp_path / "batch")])
    stream = recommend.run(["--source", "kafka", "--bootstrap", kafka_bootstrap, "--topic", topic,
                            "--group", "job", "--stop_at_end", "--streaming", "--kafka_out", prefix,
                            "--output", str(tmp_path / "stream")])
    assert as_batch_counts(stream, batch) == batch
    lines = lambda name: sorted((tmp_path / name / "predictions.jsonl").read_text().splitlines())  # noqa: E731
    assert lines("stream") == lines("batch")

    predictions = _consume_all(kafka_bootstrap, f"{prefix}.predictions", 3 * batch["counts"]["predictions"], "prediction")
    assert sorted(json.dumps(v, sort_keys=True) for _, v in predictions) == \
        sorted(json.dumps({**json.loads(line)}, sort_keys=True) for line in lines("batch"))
    batch_dead = sum(v for k, v in batch["counts"].items() if k.startswith("dead_letters."))
    assert len(_consume_all(kafka_bootstrap, f"{prefix}.dead_letters", batch_dead, "dead_letter")) == batch_dead


def as_batch_counts(stream: dict, batch: dict) -> dict:
    """A stream's summary with its late records counted as the batch job counts them: the
    simulator's records with a negative event time are behind their partition, so the stream's
    source calls them late where the batch job's validation calls them bad."""
    counts = dict(stream["counts"])
    late = counts.pop("dead_letters.ReadFromKafka", 0)
    assert counts.pop("rows_unreadable", 0) == late
    invalid = "dead_letters.ValidateInteractions"
    counts[invalid] = counts.get(invalid, 0) + late
    counts["rows_read"] += late
    assert counts[invalid] == batch["counts"].get(invalid, 0), "a late record that the batch job used"
    return {**stream, "counts": counts}


def _append_window(kv, path, w=beam.DoFn.WindowParam):
    with open(path, "a") as f:
        f.write(json.dumps([w.start.micros // 1000, sorted(kv[1])]) + "\n")


def _timestamps_by_partition(bootstrap, topic, expected) -> dict:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{uuid.uuid4().hex}"})
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(3)])
    out, read, idle = {}, 0, 0
    while read < expected and idle < 20:
        batch = consumer.consume(1000, timeout=0.5)
        idle = 0 if batch else idle + 1
        for m in batch:
            out.setdefault(m.partition(), []).append(m.timestamp()[1])
            read += 1
    consumer.close()
    return out


def test_unbounded_reader_watermark_keeps_every_partition_on_time(kafka_bootstrap, tmp_path):
    """Records 0.5 s apart across 3 partitions, 60 s windows: each window fires whole (120
    records); a watermark that ran ahead of a lagging partition would drop its records."""
    topic = _topic(kafka_bootstrap)
    # Idempotent: a plain producer may retry a batch after a later one and so append a
    # partition's records out of time order, which makes them late by right.
    producer, failed = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True}), []
    start_ms = 1_700_000_040_000  # in the past (the broker rejects the far future), on a window boundary
    for i in range(3000):
        producer.produce(topic, key=str(i % 97).encode(), value=b"x", timestamp=start_ms + i * 500,
                         on_delivery=lambda err, _: err and failed.append(err))
    assert producer.flush(30) == 0 and not failed, failed
    stamps = _timestamps_by_partition(kafka_bootstrap, topic, 3000)
    assert all(t == sorted(t) for t in stamps.values()), "a partition's records are out of time order"
    out = tmp_path / "windows.jsonl"
    out.touch()
    p = beam.Pipeline(options=pipeline_options(["--streaming"]))
    (p | ReadFromKafka(kafka_bootstrap, [topic], "g")
       | beam.WindowInto(beam.window.FixedWindows(60))
       | beam.Map(lambda r: (0, (r.partition, r.offset))) | beam.GroupByKey()
       | beam.Map(_append_window, str(out)))
    result = p.run()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(out.read_text().splitlines()) < 20:
        time.sleep(1)
    result.cancel()
    windows = sorted(json.loads(line) for line in out.read_text().splitlines())
    assert len(windows) >= 20, windows
    # Which (partition, offset)s each short window lacks: the offsets a window should hold
    # are those whose timestamps fall in it.
    short = {}
    for start, got in windows:
        want = {(part, offset) for part, ts in stamps.items() for offset, t in enumerate(ts)
                if start <= t < start + 60_000}
        if len(got) != 120:
            short[start] = sorted(want - {tuple(g) for g in got})
    assert not short, {start: (len(missing), missing[:3], missing[-3:]) for start, missing in short.items()}


def _end_offsets(bootstrap, topic) -> dict:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "ends"})
    try:
        found = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if found is None or found.error is not None:
            return {}
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in found.partitions}
    finally:
        consumer.close()


def _committed_offsets(bootstrap, topic, group) -> dict:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return {tp.partition: tp.offset for tp in consumer.committed(
            [TopicPartition(topic, p) for p in partitions], timeout=10)}
    finally:
        consumer.close()


def _wait_for(condition, timeout_s, what):
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout_s} s waiting for {what}"
        time.sleep(0.2)


def test_killed_job_and_restarted_broker_lose_nothing_and_learn_nothing_twice(kafka_bootstrap, tmp_path):
    """Kill the streaming job mid-stream, restart it, restart the broker while it runs: every
    record ends as a prediction or a dead letter (repeats are identical copies), the group's
    offsets end committed at the end, and the predictions equal one uninterrupted batch run
    over the same events, which they could not if the model had learned any event twice."""
    events = _events(600, seed=13)  # about 7 minutes of event time
    path = tmp_path / "events.avro"
    simulator.write_avro(events, str(path))
    windows = ["--attribution_minutes", "1", "--metrics_minutes", "1"]  # labels fire as the stream goes
    batch = recommend.run(["--events", str(path), "--output", str(tmp_path / "batch")] + windows)
    topic = _topic(kafka_bootstrap)
    produce(events, kafka_bootstrap, topic, "interaction", "user_id")
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    producer.produce(topic, key=b"bad", value=b"\x02not avro", timestamp=events[-1]["event_time"])
    assert producer.flush(10) == 0
    del producer  # no idle client to complain through the broker restart
    total = sum(_end_offsets(kafka_bootstrap, topic).values())
    prefix, group = f"out-{uuid.uuid4().hex[:8]}", "restarts"
    job = [sys.executable, "-m", "pipelines.recommend", "--source", "kafka", "--bootstrap", kafka_bootstrap,
           "--topic", topic, "--group", group, "--kafka_out", prefix, "--streaming",
           "--output", str(tmp_path / "stream")] + windows
    delivered = lambda: sum(_end_offsets(kafka_bootstrap, f"{prefix}.predictions").values())  # noqa: E731
    log = open(tmp_path / "jobs.log", "w")

    first = subprocess.Popen(job, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_for(lambda: delivered() >= batch["counts"]["predictions"], 180, "a third of the predictions")
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # the job and its Prism runner, mid-stream
        first.wait()
    done_before = sum(_committed_offsets(kafka_bootstrap, topic, group).values())
    assert 0 < done_before < total, (done_before, total)
    delivered_before = delivered()

    second = subprocess.Popen(job + ["--stop_at_end"], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:  # the broker restarts under a job that is reading and writing
        _wait_for(lambda: delivered() > delivered_before or second.poll() is not None, 180,
                  "the restarted job's first predictions")
        restarted = subprocess.run(["bash", str(ROOT / "scripts" / "kafka.sh"), "restart"], capture_output=True)
        assert restarted.returncode == 0, restarted.stderr[-2000:]
        assert second.poll() is None, "the job ended before the broker restarted"
        assert second.wait(timeout=300) == 0, (tmp_path / "jobs.log").read_text()[-5000:]
    finally:
        if second.poll() is None:
            os.killpg(second.pid, signal.SIGKILL)
    assert _committed_offsets(kafka_bootstrap, topic, group) == _end_offsets(kafka_bootstrap, topic)

    copies = {}
    for _, p in _consume_all(kafka_bootstrap, f"{prefix}.predictions", delivered(), "prediction"):
        copies.setdefault((p["model_key"], p["event_id"]), []).append(json.dumps(p, sort_keys=True))
    assert all(len(set(c)) == 1 for c in copies.values()), "a repeated prediction differs"
    expected = {(p["model_key"], p["event_id"]): p for p in map(
        json.loads, (tmp_path / "batch" / "predictions.jsonl").read_text().splitlines())}
    got = {key: json.loads(c[0]) for key, c in copies.items()}
    assert got.keys() == expected.keys()
    for key, p in got.items():  # the same model steps and labels; probabilities to 1e-9
        e = expected[key]       # (a restored model has differed in the last bit: see README)
        assert (p["model_step"], p["y_true"], p["y_pred"]) == (e["model_step"], e["y_true"], e["y_pred"]), key
        assert all(abs(p["y_proba"][k] - e["y_proba"][k]) < 1e-9 for k in e["y_proba"]), (key, p, e)
    batch_dead = sum(v for k, v in batch["counts"].items() if k.startswith("dead_letters."))
    dead = {(d["stage"], d["reason"], d["payload"])  # and the undecodable record; repeats are read too
            for _, d in _consume_all(kafka_bootstrap, f"{prefix}.dead_letters", batch_dead + 1, "dead_letter")}
    assert len(dead) == batch_dead + 1
    repeats = sum(len(c) for c in copies.values()) - len(copies)
    print(f"records {total}, committed at the kill {done_before}, predictions {len(copies)} "
          f"(+{repeats} repeated), dead letters {len(dead)}")
