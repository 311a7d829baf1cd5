"""Soak: an endless job at a steady input rate for a long time, sampled (issue 13's long-run check).

    bash scripts/kafka.sh start
    .venv/bin/python -m benchmarks.soak --minutes 30 --rate 20 --json out/soak.json

Produces simulated interactions to a fresh topic at `--rate` records/s, their event times
moving with the wall clock, while `pipelines.recommend --source kafka --streaming --kafka_out`
runs on them (the local runner). Every `--every` seconds it samples the resident memory of the
job's whole process tree (the job and its runner), the records produced, the group's committed
offsets and the predictions delivered. At the end one impression far ahead on every partition
moves the watermark past everything, and the check waits for the offsets to be committed up to
those. It reports the samples and three verdicts: the job never exited; peak memory over the
last 20 minutes stays within 10% of its value at minute 10; the offsets end committed up to the
last records before the final impressions.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time
import uuid

from confluent_kafka import Consumer, Producer, TopicPartition

import simulator
from benchmarks.memory import tree_rss
from core.kafka import encode, ensure_topic

ROOT = pathlib.Path(__file__).resolve().parent.parent
PARTITIONS = 3


def tree_rss_mb(pid: int) -> float:
    """Resident memory (MB) of a process and all its descendants, from /proc."""
    return tree_rss(pid)[0] / 2**20


def _offsets(bootstrap: str, topic: str, group: str) -> tuple[int, int]:
    """(committed, end) offsets summed over the topic's partitions."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        committed = sum(max(tp.offset, 0) for tp in c.committed(parts, timeout=10))
        end = sum(c.get_watermark_offsets(tp, timeout=10)[1] for tp in parts)
        return committed, end
    finally:
        c.close()


def _produce_steadily(bootstrap, topic, rate, seconds, stop, sent):
    """Simulated interactions at `rate` records/s, event time = start + what the simulator says,
    with the simulator's mean gap set so that event time moves with the wall clock."""
    start_ms = int(time.time() * 1000)
    config = simulator.SimulatorConfig(impressions=int(rate * seconds), seed=17, start_ms=start_ms,
                                       mean_gap_ms=1280.0 / rate, late_fraction=0.0)  # ~1.28 records an impression
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    began = time.monotonic()
    for i, event in enumerate(simulator.generate(config)):
        if stop.is_set() or time.monotonic() - began > seconds:
            break
        ahead = i / rate - (time.monotonic() - began)
        if ahead > 0:
            time.sleep(ahead)
        producer.produce(topic, key=event["user_id"].encode(), value=encode(event, "interaction"))
        producer.poll(0)
        sent[0], sent[1] = i + 1, event
    producer.flush(30)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--rate", type=float, default=20, help="records/s produced")
    parser.add_argument("--every", type=float, default=30, help="seconds between samples")
    parser.add_argument("--bootstrap", default="127.0.0.1:19092")
    parser.add_argument("--json", help="write the samples and verdicts here")
    args = parser.parse_args(argv)

    topic, group, prefix = (f"soak-{uuid.uuid4().hex[:8]}",) * 3
    ensure_topic(args.bootstrap, topic, PARTITIONS)
    out = ROOT / "out" / "soak"
    job = subprocess.Popen(
        [sys.executable, "-m", "pipelines.recommend", "--source", "kafka", "--bootstrap", args.bootstrap,
         "--topic", topic, "--group", group, "--kafka_out", prefix, "--streaming",
         "--attribution_minutes", "1", "--metrics_minutes", "1", "--allowed_lateness_s", "5",
         "--output", str(out)], cwd=ROOT, stdout=open(ROOT / "out" / "soak.log", "w"),
        stderr=subprocess.STDOUT, start_new_session=True)
    stop, sent = threading.Event(), [0, None]
    seconds = args.minutes * 60
    producer = threading.Thread(target=_produce_steadily,
                                args=(args.bootstrap, topic, args.rate, seconds, stop, sent), daemon=True)
    began = time.monotonic()
    producer.start()
    samples = []
    try:
        while time.monotonic() - began < seconds and job.poll() is None:
            time.sleep(args.every)
            committed, end = _offsets(args.bootstrap, topic, group)
            samples.append({"minute": round((time.monotonic() - began) / 60, 2), "rss_mb": round(tree_rss_mb(job.pid), 1),
                            "produced": sent[0], "committed": committed, "lag": end - committed})
            print(json.dumps(samples[-1]), flush=True)
        stop.set()
        producer.join()
        alive = job.poll() is None
        last = sent[1]
        tick_producer = Producer({"bootstrap.servers": args.bootstrap})
        for p in range(PARTITIONS):  # far ahead: the watermark passes every record before it
            tick = dict(last, event_id=f"tick-{p}", event_type="impression", impression_id=None,
                        event_time=last["event_time"] + 600_000)
            tick_producer.produce(topic, partition=p, value=encode(tick, "interaction"))
        tick_producer.flush(30)
        deadline, caught_up = time.monotonic() + 300, False
        while alive and time.monotonic() < deadline and not caught_up:
            committed, end = _offsets(args.bootstrap, topic, group)
            caught_up = committed == end - PARTITIONS
            time.sleep(2)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGTERM)
        job.wait()

    at_10 = [s["rss_mb"] for s in samples if s["minute"] <= 10][-1:] or [None]
    later = [s["rss_mb"] for s in samples if s["minute"] > seconds / 60 - 20 and s["minute"] > 10]
    stable = bool(at_10[0] and later and max(later) <= 1.1 * at_10[0])
    report = {"minutes": args.minutes, "rate": args.rate, "samples": samples,
              "job_alive_at_end": alive, "rss_at_minute_10_mb": at_10[0],
              "peak_rss_last_20_min_mb": max(later) if later else None, "rss_within_10_percent": stable,
              "offsets_committed_to_the_end": caught_up}
    print(json.dumps({k: v for k, v in report.items() if k != "samples"}, indent=2))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(report, indent=2))
    return 0 if alive and stable and caught_up else 1


if __name__ == "__main__":
    sys.exit(main())
