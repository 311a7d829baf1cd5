"""Event -> prediction latency and sustained throughput through Kafka, at a few input rates.

    bash scripts/kafka.sh start
    .venv/bin/python -m benchmarks.kafka_latency --events 3000 --rates 200,1000,0 --json out.json

For each rate (events/s; 0 = as fast as possible) it starts the streaming pipeline
Kafka -> decode -> features -> LearnOnline (predict, then learn) -> Kafka on the default
local streaming runner, produces simulated impressions stamped with the wall clock, and
reads the predictions back. Latency = time the prediction is read - the event's time;
events/s = predictions read / time from the first send to the last prediction read. The
newest few events are never predicted: no later event moves the watermark past them.
"""
from __future__ import annotations

import argparse
import io
import json
import threading
import time
import uuid

import apache_beam as beam
import fastavro
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

import schemas
from pipelines import simulate
from pipelines.local import pipeline_options
from transforms import kafka
from transforms.interactions import impression_features
from transforms.learner import LearnOnline
from transforms.records import Example


def _example(row):
    clicked = hash(row.event_id) % 10 == 0  # a stand-in label: latency does not depend on it
    return Example(row.event_id, row.event_time, impression_features(row.fields), clicked)


def measure(bootstrap: str, events: int, rate: float) -> dict:
    topic, out_topic = f"bench-in-{uuid.uuid4().hex[:6]}", f"bench-out-{uuid.uuid4().hex[:6]}"
    kafka.ensure_topic(bootstrap, topic, 3)
    kafka.ensure_topic(bootstrap, out_topic, 1)
    p = beam.Pipeline(options=pipeline_options(["--streaming"]))
    rows = (p | "Read" >> kafka.ReadFromKafka(bootstrap, [topic], f"bench-{uuid.uuid4().hex[:6]}",
                                               poll_records=200)
            | "Decode" >> kafka.DecodeAvro("interaction")).rows
    learned = (rows | "ToExample" >> beam.Map(_example)
               | "Learn" >> LearnOnline("models.zoo:recommender"))
    learned.predictions | "Write" >> kafka.WriteToKafka(bootstrap, out_topic, "prediction",
                                                         key=lambda pr: pr.event_id)
    result = p.run()

    config = simulate.SimulatorConfig(impressions=events, late_fraction=0.0, malformed_fraction=0.0)
    impressions = [r for r in simulate.generate(config) if r["event_type"] == "impression"]
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
    time.sleep(5)  # let the pipeline start reading

    def stamped():  # event time = wall clock at send time
        for r in impressions:
            yield {**r, "event_time": int(time.time() * 1000)}

    start = time.monotonic()
    kafka.produce(stamped(), bootstrap, topic, "interaction", "user_id", rate=rate or None)
    # The last events wait for a later one to move the watermark past them; give up on those.
    reader.join(timeout=60 + len(impressions) / 20)
    elapsed = max(last_at[0] - start, 1e-9)
    done.set()
    result.cancel()
    latencies.sort()
    pick = lambda q: round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] / 1000, 3)  # noqa: E731
    return {"rate": rate or "max", "events": len(impressions), "predictions": len(latencies),
            "eps": round(len(latencies) / elapsed, 1), "p50_s": pick(0.5) if latencies else None,
            "p99_s": pick(0.99) if latencies else None}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.kafka_latency", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:19092")
    parser.add_argument("--events", type=int, default=3000, help="impressions per rate (default %(default)s)")
    parser.add_argument("--rates", default="200,1000,0", help="events/s, comma-separated; 0 = max")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    results = [measure(args.bootstrap, args.events, float(r)) for r in args.rates.split(",")]
    print(f"{'rate':>6} {'events':>7} {'predictions':>11} {'eps':>8} {'p50 s':>7} {'p99 s':>7}")
    for r in results:
        print(f"{r['rate']:>6} {r['events']:>7} {r['predictions']:>11} {r['eps']:>8} {r['p50_s']!s:>7} {r['p99_s']!s:>7}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
