"""The main job as it runs, through Kafka: one row of `benchmarks.kafka_latency` (job `full`).

`pipelines.recommend --source kafka --streaming --kafka_out PREFIX` runs as a separate process
(validate -> user and item features -> labels -> three models -> scored predictions to Kafka)
on the local runner or a Flink cluster, while simulated interactions are produced at a steady
rate, each stamped with the wall clock as its event time (so event time is the time of
sending). The attribution window is short (`WINDOW_S`) so that labels come within the run.
Per impression of the main model, read back from `PREFIX.predictions`:

- `prediction`: read time - impression time. The main job emits a prediction once it is
  paired with its label, so this includes the attribution window (until the serving plane
  serves predictions on arrival).
- `freshness`: read time - the moment its label could be known: impression time + window (a
  negative is known when the watermark passes it; a positive's label is also emitted then, so
  every label waits the same), or, for the impressions still in their window when the input
  ends, the moment the last records were sent (far-ahead records on every partition then move
  the watermark past everything, so every window closes). The scored prediction leaves only
  after the learner learned the label, so this bounds "label knowable -> learned" from above.

Every impression counts, at any rate. `sustained_eps` is the impressions predicted over the time
from the first send to the last prediction read.
"""
from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid

import fastavro
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

import schemas
import simulator
from benchmarks.flink_jobs import cancel_flink_jobs, flink_jobs, wait_until_flink_runs
from core.kafka import encode, ensure_topic
from transforms.runners import ROOT

WINDOW_S = 10  # the attribution window (the simulator's shortest)
PARTITIONS = 3
MAIN = "recommender"


def measure_full(bootstrap: str, impressions: int, rate: float, runner_flags: list[str], python: str,
                 runner: str) -> dict:
    """One run of the main job at `rate` records/s (0: as fast as possible)."""
    topic, prefix = f"bench-full-{uuid.uuid4().hex[:6]}", f"bench-out-{uuid.uuid4().hex[:6]}"
    ensure_topic(bootstrap, topic, PARTITIONS)
    ensure_topic(bootstrap, f"{prefix}.predictions", 1)
    (ROOT / "out").mkdir(exist_ok=True)
    log = open(ROOT / "out" / f"bench-full-{runner.replace(':', '-')}.log", "w")
    flink = runner != "local"
    before = flink_jobs("RUNNING") if flink else set()
    job = subprocess.Popen(
        [python, "-m", "pipelines.recommend", "--source", "kafka", "--bootstrap", bootstrap, "--topic", topic,
         "--group", topic, "--kafka_out", prefix, "--streaming", "--attribution_minutes", str(WINDOW_S / 60),
         "--metrics_minutes", "1", "--allowed_lateness_s", "0", "--output", str(ROOT / "out" / "bench-full")]
        + runner_flags, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    reads, done = {}, threading.Event()
    reader = threading.Thread(target=read_predictions, args=(bootstrap, f"{prefix}.predictions", reads, done),
                              daemon=True)
    reader.start()
    try:
        # The job starts (a runner, a job server, a Flink deployment): not the pipeline's latency.
        if flink:
            wait_until_flink_runs(before)
        else:
            time.sleep(20)
        config = simulator.SimulatorConfig(impressions=impressions, late_fraction=0.0, malformed_fraction=0.0,
                                           attribution_window_ms=WINDOW_S * 1000)
        sent_at, last = produce_stamped(bootstrap, topic, list(simulator.generate(config)), rate)
        wait_for(lambda: sent_at.keys() <= reads.keys() or job.poll() is not None, 60 + len(sent_at) / 20)
    finally:
        done.set()
        if flink:
            cancel_flink_jobs(flink_jobs("RUNNING") - before)
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGTERM)
        job.wait()
    return full_row("full", runner, rate, sent_at, last, reads)


def full_row(job: str, runner: str, rate: float, sent_at: dict, last: int, reads: dict) -> dict:
    """A row of `benchmarks.kafka_latency` from what was sent (impression id -> sent ms, and
    the last send ms) and read, with the definitions of `benchmarks.full_job` (its docstring),
    plus the median prediction latency."""
    got = [(reads[i], t) for i, t in sent_at.items() if i in reads]
    first = min(sent_at.values())
    prediction = sorted((r - t) / 1000 for r, t in got)
    freshness = sorted((r - min(t + WINDOW_S * 1000, last)) / 1000 for r, t in got)
    pick = lambda xs, q: round(xs[min(len(xs) - 1, int(q * len(xs)))], 3) if xs else None  # noqa: E731
    return {"job": job, "runner": runner, "rate": rate or "max", "impressions": len(sent_at), "predictions": len(got),
            "sustained_eps": round(len(got) / max((max(r for r, _ in got) - first) / 1000, 1e-9), 1) if got else 0,
            "freshness_p50_s": pick(freshness, 0.5), "freshness_p99_s": pick(freshness, 0.99),
            "prediction_p50_s": pick(prediction, 0.5), "prediction_p99_s": pick(prediction, 0.99)}


def produce_stamped(bootstrap, topic, events, rate):
    """Sends `events` at `rate` records/s, each stamped now; returns ({impression id: sent ms},
    the last send ms), after one far-ahead record per partition."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    sent_at, began = {}, time.monotonic()
    for i, event in enumerate(events):
        ahead = i / rate - (time.monotonic() - began) if rate else 0
        if ahead > 0:
            time.sleep(ahead)
        now = int(time.time() * 1000)
        event = dict(event, event_time=now)
        producer.produce(topic, key=event["user_id"].encode(), value=encode(event, "interaction"))
        producer.poll(0)
        if event["event_type"] == "impression":
            sent_at[event["event_id"]] = now
    last = int(time.time() * 1000)
    for p in range(PARTITIONS):
        tick = dict(events[0], event_id=f"tick-{p}", event_type="impression", event_time=last + 600_000)
        producer.produce(topic, partition=p, value=encode(tick, "interaction"))
    producer.flush(30)
    return sent_at, last


def read_predictions(bootstrap, topic, reads, done):
    """{impression id: read ms} of the main model's predictions, until `done`."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex}"})
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    schema = schemas.load("prediction")
    while not done.is_set():
        for m in consumer.consume(500, timeout=0.2):
            if m.error() is None:
                p = fastavro.schemaless_reader(io.BytesIO(m.value()), schema)
                if p["model_key"] == MAIN:
                    reads.setdefault(p["event_id"], int(time.time() * 1000))
    consumer.close()


def wait_for(condition, timeout_s):
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.5)


if __name__ == "__main__":
    print(json.dumps(measure_full("127.0.0.1:19092", int(sys.argv[1]), float(sys.argv[2]), [], sys.executable,
                                  "local")))
