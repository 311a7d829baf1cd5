"""An endless job lives: it outlives the job service's timeout and keeps learning on the real
broker (Beam's portable runner gave its job streams that timeout as a deadline, and the
local job died with them: see `pipelines.prism`)."""
import collections
import json
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest
from confluent_kafka import Producer

import simulator
from core.kafka import encode, produce
from pipelines import recommend
from tests.conftest import ROOT
from tests.test_kafka import _committed_offsets, _consume_all, _end_offsets, _events, _topic, _wait_for

pytestmark = pytest.mark.kafka
JOB_SERVER_TIMEOUT_S = 20


def test_an_endless_job_outlives_the_job_server_timeout(kafka_bootstrap, tmp_path):
    events = _events(300, seed=21)
    half = len(events) // 2
    topic, prefix = _topic(kafka_bootstrap), f"out-{uuid.uuid4().hex[:8]}"
    produce(events[:half], kafka_bootstrap, topic, "interaction", "user_id")
    delivered = lambda: sum(_end_offsets(kafka_bootstrap, f"{prefix}.predictions").values())  # noqa: E731
    log = open(tmp_path / "job.log", "w")
    started = time.monotonic()
    job = subprocess.Popen(
        [sys.executable, "-m", "pipelines.recommend", "--source", "kafka", "--bootstrap", kafka_bootstrap,
         "--topic", topic, "--group", "endless", "--kafka_out", prefix, "--streaming",
         "--attribution_minutes", "1", "--metrics_minutes", "1", "--output", str(tmp_path / "out"),
         # The first half spans about 90 s of event time: the watermark must not trail it by 60.
         "--allowed_lateness_s", "5",
         f"--job_server_timeout={JOB_SERVER_TIMEOUT_S}"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_for(lambda: delivered() > 0 or job.poll() is not None, 180, "the first predictions")
        assert job.poll() is None, (tmp_path / "job.log").read_text()[-3000:]
        # Well past the deadline the streams had: still running ...
        time.sleep(max(0.0, started + 3 * JOB_SERVER_TIMEOUT_S - time.monotonic()))
        assert job.poll() is None, (tmp_path / "job.log").read_text()[-3000:]
        # ... and still learning: new events get their predictions.
        before = delivered()
        produce(events[half:], kafka_bootstrap, topic, "interaction", "user_id")
        _wait_for(lambda: delivered() > before or job.poll() is not None, 180, "predictions of the new events")
        assert job.poll() is None, (tmp_path / "job.log").read_text()[-3000:]
        assert time.monotonic() - started > 3 * JOB_SERVER_TIMEOUT_S
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
        job.wait()


def test_an_endless_job_lives_through_garbage_and_accounts_for_every_record(kafka_bootstrap, tmp_path):
    """1,000 undecodable values mixed into a live topic: the endless job keeps running, commits
    its offsets up to what the watermark has passed, and every record is accounted for: in =
    predictions + joined outcomes + dead letters, with the batch job's predictions over the
    good records and its dead letters plus one per garbage value."""
    events = _events(300, seed=31)
    path = tmp_path / "events.avro"
    simulator.write_avro(events, str(path))
    windows = ["--attribution_minutes", "1", "--metrics_minutes", "1"]
    batch = recommend.run(["--events", str(path), "--output", str(tmp_path / "batch")] + windows)
    # Each garbage value is a distinct interaction cut short by its last byte: never decodable.
    garbage = [encode(dict(events[i % len(events)], event_id=f"garbage-{i}"), "interaction")[:-1]
               for i in range(1000)]
    topic, prefix, group = _topic(kafka_bootstrap), f"out-{uuid.uuid4().hex[:8]}", "garbage"
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    # The first events, until every partition holds one: a partition still empty when the job
    # reads the others does not hold the watermark back, and its first records could come late.
    first, delivered = 0, []
    while len({partition for _, partition in delivered}) < 3:
        producer.produce(topic, key=events[first]["user_id"].encode(), value=encode(events[first], "interaction"),
                         on_delivery=lambda error, message: delivered.append((error, message.partition())))
        assert producer.flush(30) == 0 and delivered[-1][0] is None, delivered[-1]
        first += 1
    job = subprocess.Popen(
        [sys.executable, "-m", "pipelines.recommend", "--source", "kafka", "--bootstrap", kafka_bootstrap,
         "--topic", topic, "--group", group, "--kafka_out", prefix, "--streaming", "--allowed_lateness_s", "5",
         "--output", str(tmp_path / "out")] + windows,
        cwd=ROOT, stdout=open(tmp_path / "job.log", "w"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        for i, event in enumerate(events):  # live: while the job runs, garbage among the events
            if i >= first:
                producer.produce(topic, key=event["user_id"].encode(), value=encode(event, "interaction"))
            for value in garbage[i * len(garbage) // len(events):(i + 1) * len(garbage) // len(events)]:
                producer.produce(topic, key=value[-8:], value=value)
            producer.poll(0)
        # Last, an impression far ahead on each partition moves the watermark past everything.
        tick = dict(events[0], event_time=events[-1]["event_time"] + 600_000)
        for p in range(3):
            producer.produce(topic, partition=p, value=encode(dict(tick, event_id=f"tick-{p}"), "interaction"))
        assert producer.flush(30) == 0
        ends = _end_offsets(kafka_bootstrap, topic)
        before_ticks = {p: end - 1 for p, end in ends.items()}
        try:
            _wait_for(lambda: _committed_offsets(kafka_bootstrap, topic, group) == before_ticks or job.poll() is not None,
                      300, "offsets committed up to the ticks")
        except AssertionError as e:  # what a stall looked like, for the one who reads CI's log
            raise AssertionError(f"{e}; committed {_committed_offsets(kafka_bootstrap, topic, group)}, expected "
                                 f"{before_ticks}; the job's log ends:\n{(tmp_path / 'job.log').read_text()[-4000:]}")
        assert job.poll() is None, (tmp_path / "job.log").read_text()[-3000:]
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
        job.wait()

    # Offsets are committed only once the results before them are delivered: everything is
    # already on the output topics, so they are read to their ends, without waiting for more.
    main_predictions = {p["event_id"]: json.dumps(p, sort_keys=True) for _, p in _consume_all(
        kafka_bootstrap, f"{prefix}.predictions", 0, "prediction") if p["model_key"] == "recommender"}
    batch_predictions = {p["event_id"]: json.dumps(p, sort_keys=True) for p in map(
        json.loads, (tmp_path / "batch" / "predictions.jsonl").read_text().splitlines()) if p["model_key"] == "recommender"}
    assert main_predictions == batch_predictions, _differences(
        main_predictions, batch_predictions, events, _consume_all(kafka_bootstrap, f"{prefix}.dead_letters", 0, "dead_letter"),
        (tmp_path / "job.log").read_text())
    batch_dead = sum(v for k, v in batch["counts"].items() if k.startswith("dead_letters."))
    dead = {(d["stage"], d["reason"], d["payload"]) for _, d in _consume_all(
        kafka_bootstrap, f"{prefix}.dead_letters", 0, "dead_letter")}
    assert sorted(p for stage, _, p in dead if stage == "DecodeAvro") == sorted(garbage)
    assert len(dead) == batch_dead + len(garbage)
    joined = batch["counts"]["outcomes_joined"]  # (joined outcomes leave no record of their own)
    assert len(events) + len(garbage) == len(main_predictions) + joined + len(dead)


def _differences(stream: dict, batch: dict, events: list, dead_letters: list, job_log: str) -> str:
    """What a reader of CI's log needs when the stream's predictions are not the batch job's: which
    differ, where they are in event time, and what the dead letters say."""
    start = events[0]["event_time"]
    at = {e["event_id"]: e["event_time"] - start for e in events}
    missing, extra = sorted(set(batch) - set(stream)), sorted(set(stream) - set(batch))
    changed = sorted(i for i in set(batch) & set(stream) if batch[i] != stream[i])
    reasons = collections.Counter((d["stage"], d["reason"][:60]) for _, d in dead_letters)
    return (f"{len(missing)} missing, at ms {[at.get(i) for i in missing][:40]} of {at[events[-1]['event_id']]}; "
            f"{len(extra)} extra {extra[:5]}; {len(changed)} changed {changed[:5]}; dead letters: "
            f"{reasons.most_common(12)}; the job's log ends:\n{job_log[-3000:]}")
