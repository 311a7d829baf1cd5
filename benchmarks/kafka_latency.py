"""Event -> prediction latency and sustained throughput through Kafka, at a few input rates:
our jobs, the same work without Beam (the floor) and the reduced job written with another
stream processor (the peer), in one run.

    bash scripts/kafka.sh start; bash scripts/flink.sh start; bash scripts/peer.sh install
    .venv/bin/python -m benchmarks.kafka_latency --rates 500,1000,2000,0 --events 4000 \
        --runners local,flink:1,flink:2 --json out.json

For each rate (events/s; 0 = as fast as possible) and job it produces simulated events stamped
with the wall clock and reads the predictions back. One row each, with the keys `job`, `runner`,
`rate`, `impressions`, `predictions`, `sustained_eps`, `freshness_p50_s`, `freshness_p99_s`,
`prediction_p50_s` (where known) and `prediction_p99_s`. The rows, by `job` and `runner`:

- `reduced` on `local` (Prism, the default streaming runner) and `flink:N` (the project's Flink
  cluster at parallelism N, run from .venv-flink; Kafka is read there by Beam's Java KafkaIO,
  see transforms/io/kafkaio.py): the streaming pipeline Kafka -> decode -> LearnOnline
  (predict, then learn; labels from a stable hash of the event id, `stand_in_label`) -> Kafka,
  where latency = time the prediction is read - the event's time and events/s = predictions
  read / time from the first send to the last prediction read.
- `reduced` on `peer:quix`: the same per-event work written with Quix Streams
  (`benchmarks/peer_quix.py`, in .venv-peer: `bash scripts/peer.sh install`), measured the
  same way on its own topics. It applies events in the order it consumes them, not in event
  time order as ours does (see its docstring).
- `full` on `local` or `flink:N`: the main job itself (`benchmarks/full_job.py`).
- `floor` on `local`: the main job's work as one plain Python loop without Beam, in its own
  process (`benchmarks/stream_floor.py`), measured as `full` is: the most `full` can reach with
  this work here.
- `passthrough` on `local` or `flink:N`: `reduced` without its model (Kafka -> decode -> a
  constant prediction -> Kafka), measured as `reduced` is: the most any Beam job reading and
  writing Kafka this way reaches on the runner, and so a bound for `reduced`.

`reduced` rows also say whether every prediction read is exact, `equal_to_bare_river`: its
P(click) equals a bare river loop's (the same model, predict_proba_one then learn_one) over the
same impressions in the order the job applies them: ours in (event time, event id) order, the
peer in the order it consumed them (its output's order). The peer row's `in_event_order` says
whether those orders were the same, i.e. whether the peer's predictions are those ours gives on
the same events (on a topic of three partitions, interleaved as read, they seldom are).
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
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

import schemas
import simulator
from benchmarks.flink_jobs import cancel_flink_jobs, endless_runner_args, flink_jobs, runner_args, wait_until_flink_runs
from benchmarks.full_job import PARTITIONS, measure_full
from benchmarks.peer_quix import MODEL, stand_in_label
from benchmarks.stream_floor import measure_floor, stop_job, wait_ready
from core.interactions import impression_features
from core.kafka import encode, ensure_topic, produce
from core.records import Example, Prediction
from models import factory
from pipelines.options import pipeline_options
from transforms.io.kafka import DecodeAvro, WriteToKafka
from transforms.io.kafka_read import ReadFromKafka
from transforms.learning.learn_online import LearnOnline
from transforms.runners import ROOT

END = "end-of-input-"  # the event ids of the records that end a run (`end_of_input`)

JOBS = ("reduced", "passthrough", "full", "floor")
PEERS = ("quix",)
PEER_SCRIPT = ["bash", str(ROOT / "scripts" / "peer.sh")]


def _example(row):
    clicked = stand_in_label(row.event_id)  # a stand-in label: latency does not depend on it
    return Example(row.event_id, row.event_time, impression_features(row.fields), clicked)


def _constant(row) -> Prediction:
    return Prediction(row.event_id, MODEL, row.event_time, None, False, {False: 0.5, True: 0.5}, 0)


def measure(bootstrap: str, events: int, rate: float, runner: str = "local", job: str = "reduced") -> dict:
    topic, out_topic = f"bench-in-{uuid.uuid4().hex[:6]}", f"bench-out-{uuid.uuid4().hex[:6]}"
    ensure_topic(bootstrap, topic, PARTITIONS)
    ensure_topic(bootstrap, out_topic, 1)
    flink = runner != "local"
    before = flink_jobs("RUNNING") if flink else set()
    p = beam.Pipeline(options=pipeline_options(["--streaming"] + runner_args(runner)))
    rows = (p | "Read" >> ReadFromKafka(bootstrap, [topic], f"bench-{uuid.uuid4().hex[:6]}",
                                               poll_records=200)
            | "Decode" >> DecodeAvro("interaction")).rows
    if job == "passthrough":
        predictions = rows | "Constant" >> beam.Map(_constant)
    else:
        predictions = (rows | "ToExample" >> beam.Map(_example) | "Learn" >> LearnOnline(MODEL)).predictions
    predictions | "Write" >> WriteToKafka(bootstrap, out_topic, "prediction",
                                                         key=lambda pr: pr.event_id)
    result = p.run()
    try:
        row, sent, read = _drive(bootstrap, topic, out_topic, events, rate,
                                 started=lambda: wait_until_flink_runs(before) if flink else None)
    finally:
        if flink:
            cancel_flink_jobs(flink_jobs("RUNNING") - before)
        else:
            result.cancel()
    if job == "passthrough":
        return {"job": job, "runner": runner, **row}
    exact = _equal_to_bare_river(sent, read, [r["event_id"] for r in sorted(sent, key=_event_order)])
    return {"job": job, "runner": runner, **row, "equal_to_bare_river": exact}


def measure_peer(bootstrap: str, events: int, rate: float, peer: str = "quix") -> dict:
    """The reduced job's row for a peer (`benchmarks/peer_<peer>.py`, run in .venv-peer),
    measured as `measure` measures ours."""
    topic, out_topic = f"bench-in-{uuid.uuid4().hex[:6]}", f"bench-out-{uuid.uuid4().hex[:6]}"
    ensure_topic(bootstrap, topic, PARTITIONS)
    ensure_topic(bootstrap, out_topic, 1)
    (ROOT / "out").mkdir(exist_ok=True)
    log = open(ROOT / "out" / f"bench-peer-{peer}.log", "w")
    job = subprocess.Popen(PEER_SCRIPT + ["run", "-m", f"benchmarks.peer_{peer}", "--bootstrap", bootstrap,
                                          "--topic", topic, "--out", out_topic],
                           cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True, start_new_session=True)
    try:
        wait_ready(job, f"the {peer} peer", log.name)  # its start-up (imports, the model) is not latency
        row, sent, read = _drive(bootstrap, topic, out_topic, events, rate)
    finally:
        stop_job(job)
    applied = list(dict.fromkeys(pr["event_id"] for pr in read))  # its order: the output's
    in_event_order = applied == [r["event_id"] for r in sorted(sent, key=_event_order)][:len(applied)]
    return {"job": "reduced", "runner": f"peer:{peer}", **row,
            "equal_to_bare_river": _equal_to_bare_river(sent, read, applied), "in_event_order": in_event_order}


def _drive(bootstrap: str, topic: str, out_topic: str, events: int, rate: float, started=lambda: None):
    """Produces `events` simulated impressions to `topic` at `rate`, each stamped with the wall
    clock when sent, and reads the predictions back from `out_topic` (one partition) until all
    are in or a minute (and a second per 20 events) after the last send. Returns (the row's
    numbers, the impressions as sent, the predictions in the order read)."""
    config = simulator.SimulatorConfig(impressions=events, late_fraction=0.0, malformed_fraction=0.0)
    impressions = [r for r in simulator.generate(config) if r["event_type"] == "impression"]
    read, done, last_at = [], threading.Event(), [0.0]  # read: (read ms, prediction)

    def consume():
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex}"})
        consumer.assign([TopicPartition(out_topic, 0, OFFSET_BEGINNING)])
        schema = schemas.load("prediction")
        while len(read) < len(impressions) and not done.is_set():
            for m in consumer.consume(500, timeout=0.2):
                if m.error() is None:
                    prediction = fastavro.schemaless_reader(io.BytesIO(m.value()), schema)
                    if not prediction["event_id"].startswith(END):
                        read.append((time.time() * 1000, prediction))
                        last_at[0] = time.monotonic()
        consumer.close()

    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    started()
    time.sleep(5)  # let the job start reading
    sent = []

    def stamped():  # event time = wall clock at send time
        for r in impressions:
            sent.append({**r, "event_time": int(time.time() * 1000)})
            yield sent[-1]

    start = time.monotonic()
    produce(stamped(), bootstrap, topic, "interaction", "user_id", rate=rate or None)
    end_of_input(bootstrap, topic, impressions[0])  # the last tick waits for a later record
    reader.join(timeout=60 + len(impressions) / 20)
    done.set()
    reader.join(timeout=10)
    elapsed = max(last_at[0] - start, 1e-9)
    latencies = sorted(t - pr["event_time"] for t, pr in read)
    pick = lambda q: round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] / 1000, 3)  # noqa: E731
    row = {"rate": rate or "max", "impressions": len(impressions), "predictions": len(latencies),
           "sustained_eps": round(len(latencies) / elapsed, 1),
           "freshness_p50_s": None, "freshness_p99_s": None,  # (stand-in labels: known at once)
           "prediction_p50_s": pick(0.5) if latencies else None, "prediction_p99_s": pick(0.99) if latencies else None}
    return row, sent, [pr for _, pr in read]


def end_of_input(bootstrap: str, topic: str, like: dict) -> None:
    """One impression far ahead on each partition of `topic`: the watermark passes all before."""
    producer = Producer({"bootstrap.servers": bootstrap})
    ahead = int(time.time() * 1000) + 600_000
    for p in range(PARTITIONS):
        # Its Kafka timestamp too: the reduced job's reader stamps records with it.
        producer.produce(topic, partition=p, timestamp=ahead,
                         value=encode(dict(like, event_id=f"{END}{p}", event_time=ahead), "interaction"))
    producer.flush(30)


def _event_order(record: dict) -> tuple:
    return record["event_time"], record["event_id"]


def _equal_to_bare_river(sent: list, read: list, order: list) -> bool | None:
    """Whether every prediction read has the P(click) of a bare river loop (the reduced job's
    model: predict_proba_one, then learn_one the stand-in label) over the impressions `sent`
    applied in `order` (event ids). None when nothing was read."""
    by_id = {r["event_id"]: r for r in sent}
    model, bare = factory.build(MODEL), {}
    for event_id in order:
        x = impression_features(by_id[event_id])
        bare[event_id] = model.predict_proba_one(x)[True]
        model.learn_one(x, stand_in_label(event_id))
    return all(pr["y_proba"]["True"] == bare.get(pr["event_id"]) for pr in read) if read else None


def measure_in_flink_venv(args, runner: str, jobs: list) -> list[dict]:
    """The Flink rows, measured by this module run from .venv-flink (the job server's Beam)."""
    python = ROOT / ".venv-flink" / "bin" / "python"
    if not python.exists():
        raise FileNotFoundError(f"no {python}: run `bash scripts/flink.sh install`")
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        subprocess.run([str(python), "-m", "benchmarks.kafka_latency", "--bootstrap", args.bootstrap,
                        "--events", str(args.events), "--rates", args.rates, "--runners", runner,
                        "--jobs", ",".join(jobs), "--peers", "none", "--json", out.name], cwd=ROOT, check=True)
        return json.load(open(out.name))


def _peers(parser, given: str | None) -> list[str]:
    """The peers to measure: those given, else quix when .venv-peer is installed."""
    installed = subprocess.run(PEER_SCRIPT + ["status"], capture_output=True).returncode == 0
    if given is None:
        if not installed:
            print("no .venv-peer: the peer rows (peer:quix) are left out; `bash scripts/peer.sh install` "
                  "adds them", file=sys.stderr)
        return list(PEERS) if installed else []
    peers = [p for p in given.split(",") if p and p != "none"]
    unknown = sorted(set(peers) - set(PEERS))
    if unknown:
        parser.error(f"--peers: unknown {', '.join(unknown)} (known: {', '.join(PEERS)}, or none)")
    if peers and not installed:
        parser.error(f"--peers {','.join(peers)} needs .venv-peer: run `bash scripts/peer.sh install`")
    return peers


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.kafka_latency", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:19092")
    parser.add_argument("--events", type=int, default=3000, help="impressions per rate (default %(default)s)")
    parser.add_argument("--rates", default="200,1000,0", help="events/s, comma-separated; 0 = max")
    parser.add_argument("--runners", default="local",
                        help="comma-separated: local (Prism) and/or flink:PARALLELISM (default %(default)s)")
    parser.add_argument("--jobs", default=",".join(JOBS),
                        help="comma-separated: reduced (decode -> model -> Kafka), passthrough (reduced "
                             "without the model), full (the main job, benchmarks.full_job) and/or floor (the "
                             "main job's work without Beam, benchmarks.stream_floor) (default %(default)s)")
    parser.add_argument("--peers", help="comma-separated peers of the reduced job: quix (benchmarks.peer_quix, "
                                        "in .venv-peer) or none (default: quix when .venv-peer is installed)")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    runners, rates, jobs = args.runners.split(","), args.rates.split(","), args.jobs.split(",")
    for runner in runners:
        runner_args(runner)  # a bad name fails before anything runs
    if set(jobs) - set(JOBS):
        parser.error(f"--jobs: unknown {', '.join(sorted(set(jobs) - set(JOBS)))} (known: {', '.join(JOBS)})")
    peers = _peers(parser, args.peers) if "reduced" in jobs else []
    in_flink_venv = beam.__version__ == "2.62.0"
    results = []
    for runner in runners:
        if runner != "local" and not in_flink_venv:
            if {"reduced", "passthrough", "full"} & set(jobs):
                results += measure_in_flink_venv(args, runner, [j for j in jobs if j != "floor"])
            continue
        for rate in map(float, rates):
            for job in ("reduced", "passthrough"):
                if job in jobs:
                    results.append(measure(args.bootstrap, args.events, rate, runner, job))
            if "full" in jobs:
                results.append(measure_full(args.bootstrap, args.events, rate, endless_runner_args(runner),
                                            sys.executable, runner))
    for rate in map(float, rates):  # not on a Beam runner: once per rate
        for peer in peers:
            results.append(measure_peer(args.bootstrap, args.events, rate, peer))
        if "floor" in jobs and not in_flink_venv:
            results.append(measure_floor(args.bootstrap, args.events, rate))
    rank = {str(float(r) or "max"): i for i, r in enumerate(rates)}
    results.sort(key=lambda r: (rank.get(str(r["rate"]), len(rank)), JOBS.index(r["job"])))
    columns = ("job", "runner", "rate", "impressions", "predictions", "sustained_eps", "freshness_p50_s",
               "freshness_p99_s", "prediction_p50_s", "prediction_p99_s", "equal_to_bare_river", "in_event_order")
    for r in [dict(zip(columns, columns))] + results:
        print(" ".join(f"{str(r.get(c, ''))[:11]:>11}" for c in columns))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
