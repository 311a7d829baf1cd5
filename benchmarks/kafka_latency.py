"""Event -> prediction latency and sustained throughput through Kafka, at a few input rates.

    bash scripts/kafka.sh start
    .venv/bin/python -m benchmarks.kafka_latency --events 3000 --rates 200,1000,0 --json out.json
    bash scripts/flink.sh start     # for the Flink rows
    .venv/bin/python -m benchmarks.kafka_latency --runners local,flink:1,flink:2 --json out.json

For each runner and rate (events/s; 0 = as fast as possible) and job it produces simulated
events stamped with the wall clock and reads the predictions back. One row each, with the keys
`job`, `runner`, `rate`, `sustained_eps`, `freshness_p50_s`, `freshness_p99_s` and
`prediction_p99_s`. Jobs: `reduced`, the streaming pipeline Kafka -> decode -> LearnOnline
(predict, then learn; labels from `hash()`) -> Kafka, where latency = time the prediction is
read - the event's time and events/s = predictions read / time from the first send to the last
prediction read; `full`, the main job itself (`benchmarks/full_job.py`: features, labels, three
models, freshness of the labels learned). Runners: `local` (Prism, the default streaming runner) and `flink:N` (the
project's Flink cluster at parallelism N, run from .venv-flink; Kafka is read there by Beam's
Java KafkaIO, see transforms/kafka_flink.py). On the local runner the newest few events are
never predicted: no later event moves the watermark past them.
"""
from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import apache_beam as beam
import fastavro
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

import schemas
import simulator
from benchmarks.flink_jobs import cancel_flink_jobs, endless_runner_args, flink_jobs, runner_args, wait_until_flink_runs
from benchmarks.full_job import measure_full
from core.interactions import impression_features
from core.kafka import ensure_topic, produce
from core.records import Example
from pipelines.options import pipeline_options
from transforms.io.kafka import DecodeAvro, WriteToKafka
from transforms.io.kafka_read import ReadFromKafka
from transforms.learning.learn_online import LearnOnline
from transforms.runners import ROOT


def _example(row):
    clicked = hash(row.event_id) % 10 == 0  # a stand-in label: latency does not depend on it
    return Example(row.event_id, row.event_time, impression_features(row.fields), clicked)


def measure(bootstrap: str, events: int, rate: float, runner: str = "local") -> dict:
    topic, out_topic = f"bench-in-{uuid.uuid4().hex[:6]}", f"bench-out-{uuid.uuid4().hex[:6]}"
    ensure_topic(bootstrap, topic, 3)
    ensure_topic(bootstrap, out_topic, 1)
    flink = runner != "local"
    before = flink_jobs("RUNNING") if flink else set()
    p = beam.Pipeline(options=pipeline_options(["--streaming"] + runner_args(runner)))
    rows = (p | "Read" >> ReadFromKafka(bootstrap, [topic], f"bench-{uuid.uuid4().hex[:6]}",
                                               poll_records=200)
            | "Decode" >> DecodeAvro("interaction")).rows
    learned = (rows | "ToExample" >> beam.Map(_example)
               | "Learn" >> LearnOnline("models.zoo:recommender"))
    learned.predictions | "Write" >> WriteToKafka(bootstrap, out_topic, "prediction",
                                                         key=lambda pr: pr.event_id)
    result = p.run()

    config = simulator.SimulatorConfig(impressions=events, late_fraction=0.0, malformed_fraction=0.0)
    impressions = [r for r in simulator.generate(config) if r["event_type"] == "impression"]
    latencies, done, last_at = [], threading.Event(), [0.0]

    def consume():
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex}"})
        consumer.assign([TopicPartition(out_topic, 0, OFFSET_BEGINNING)])
        schema = schemas.load("prediction")
        while len(latencies) < len(impressions) and not done.is_set():
            for m in consumer.consume(500, timeout=0.2):
                if m.error() is None:
                    pr = fastavro.schemaless_reader(io.BytesIO(m.value()), schema)
                    latencies.append(time.time() * 1000 - pr["event_time"])
                    last_at[0] = time.monotonic()
        consumer.close()

    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    if flink:
        wait_until_flink_runs(before)
    time.sleep(5)  # let the pipeline start reading

    def stamped():  # event time = wall clock at send time
        for r in impressions:
            yield {**r, "event_time": int(time.time() * 1000)}

    start = time.monotonic()
    produce(stamped(), bootstrap, topic, "interaction", "user_id", rate=rate or None)
    # The last events wait for a later one to move the watermark past them; give up on those.
    reader.join(timeout=60 + len(impressions) / 20)
    elapsed = max(last_at[0] - start, 1e-9)
    done.set()
    if flink:
        cancel_flink_jobs(flink_jobs("RUNNING") - before)
    else:
        result.cancel()
    latencies.sort()
    pick = lambda q: round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] / 1000, 3)  # noqa: E731
    return {"job": "reduced", "runner": runner, "rate": rate or "max", "impressions": len(impressions),
            "predictions": len(latencies), "sustained_eps": round(len(latencies) / elapsed, 1),
            "freshness_p50_s": None, "freshness_p99_s": None,  # (labels from hash(): known at once)
            "prediction_p50_s": pick(0.5) if latencies else None, "prediction_p99_s": pick(0.99) if latencies else None}


def measure_in_flink_venv(args, runner: str) -> list[dict]:
    """The Flink rows, measured by this module run from .venv-flink (the job server's Beam)."""
    python = ROOT / ".venv-flink" / "bin" / "python"
    if not python.exists():
        raise FileNotFoundError(f"no {python}: run `bash scripts/flink.sh install`")
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        subprocess.run([str(python), "-m", "benchmarks.kafka_latency", "--bootstrap", args.bootstrap,
                        "--events", str(args.events), "--rates", args.rates, "--runners", runner,
                        "--jobs", args.jobs, "--json", out.name], cwd=ROOT, check=True)
        return json.load(open(out.name))


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.kafka_latency", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:19092")
    parser.add_argument("--events", type=int, default=3000, help="impressions per rate (default %(default)s)")
    parser.add_argument("--rates", default="200,1000,0", help="events/s, comma-separated; 0 = max")
    parser.add_argument("--runners", default="local",
                        help="comma-separated: local (Prism) and/or flink:PARALLELISM (default %(default)s)")
    parser.add_argument("--jobs", default="reduced,full",
                        help="comma-separated: reduced (decode -> model -> Kafka) and/or full (the main job, "
                             "benchmarks.full_job) (default %(default)s)")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    runners = args.runners.split(",")
    for runner in runners:
        runner_args(runner)  # a bad name fails before anything runs
    in_flink_venv = beam.__version__ == "2.62.0"
    results = []
    for runner in runners:
        if runner != "local" and not in_flink_venv:
            results += measure_in_flink_venv(args, runner)
        else:
            for rate in map(float, args.rates.split(",")):
                if "reduced" in args.jobs:
                    results.append(measure(args.bootstrap, args.events, rate, runner))
                if "full" in args.jobs:
                    results.append(measure_full(args.bootstrap, args.events, rate, endless_runner_args(runner),
                                                sys.executable, runner))
    print(f"{'job':>8} {'runner':>8} {'rate':>6} {'impressions':>11} {'predictions':>11} {'events/s':>9} "
          f"{'fresh p50':>9} {'fresh p99':>9} {'pred p99':>9}")
    for r in results:
        print(f"{r['job']:>8} {r['runner']:>8} {r['rate']:>6} {r['impressions']:>11} {r['predictions']:>11} "
              f"{r['sustained_eps']:>9} {r['freshness_p50_s']!s:>9} {r['freshness_p99_s']!s:>9} "
              f"{r['prediction_p99_s']!s:>9}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
