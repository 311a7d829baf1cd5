"""Freshness of the live loop: from the moment a label can be known to a published model version
that has learned it (issue 14's definition, shared with the learning-plane speed work).

    python -m benchmarks.freshness --duration_s 180 --visits_per_s 4 [--json out.json]

It runs `pipelines.live` (broker, streaming learner on the local runner, server, simulated
users) for `--duration_s`, and meanwhile reads the registry every 0.2 s, keeping every version
it publishes (its event-time clock, when it was published), and tails the interactions topic,
noting when each record arrives. An impression's label can be known once the learner's
watermark passes its window's end, impression time + `--attribution_s` (the job labels clicks
then too: see the README). The learner's watermark is the newest event time read less
`--allowed_lateness_s` (one partition), so that moment is when the first record with an event
time past `window end + lateness` arrived. The label is learned by the first version whose
clock (the event time of the last event it applied, in event-time order) reaches the window's
end. Freshness = that version's publish time - the moment its label could be known.

Labels due in the first `--warmup_s` of serving (the learner catching up on the history) are
counted apart, as are labels no version had learned when the run stopped.
"""
from __future__ import annotations

import argparse
import bisect
import io
import json
import subprocess
import sys
import tempfile
import threading
import time

import fastavro
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

import schemas
from stores.registry import open_registry

MODEL = "recommender"


def measure(args) -> dict:
    # A broker that outlives the run (pipelines.live stops one it started): the topic is read after.
    subprocess.run(["bash", "scripts/kafka.sh", "start"], check=True, capture_output=True)
    out = tempfile.mkdtemp(prefix="freshness-")
    versions: dict[int, tuple[int, int]] = {}  # version -> (clock ms, published ms)
    stop = threading.Event()
    arrivals: list = []  # (event time ms, read ms) of every record of the topic
    served: dict = {}  # impression id -> event time ms, of what the server served
    watcher = threading.Thread(target=_watch, args=(f"{out}/registry.sqlite", versions, stop), daemon=True)
    tail = threading.Thread(target=_tail, args=(args.bootstrap, args.topic, arrivals, served, stop), daemon=True)
    started_ms = int(time.time() * 1000)
    live = subprocess.Popen([sys.executable, "-m", "pipelines.live", "--output", out, "--port", str(args.port),
                             "--history", str(args.history), "--visits_per_s", str(args.visits_per_s),
                             "--attribution_s", str(args.attribution_s), "--topic", args.topic,
                             "--allowed_lateness_s", str(args.allowed_lateness_s), "--duration_s", str(args.duration_s),
                             "--publish_every_s", str(args.publish_every_s), "--bootstrap", args.bootstrap],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in live.stdout:
        lines.append(line.rstrip())
        print(line, end="", file=sys.stderr)
        if line.startswith("started:"):  # the registry and the topic are there now, afresh
            watcher.start()
            tail.start()
    if live.wait() != 0:
        raise SystemExit(f"pipelines.live failed ({live.returncode})")
    stop.set()
    watcher.join()
    tail.join()
    arrivals.sort()
    event_times = [t for t, _ in arrivals]
    first_read = [r for _, r in arrivals]
    for i in range(len(first_read) - 2, -1, -1):  # the earliest read of any record at or after each
        first_read[i] = min(first_read[i], first_read[i + 1])
    serving_from = min(served.values()) if served else started_ms
    window_ms, lateness_ms = int(args.attribution_s * 1000), int(args.allowed_lateness_s * 1000)
    ordered = sorted(versions.items())
    clocks = [clock for _, (clock, _) in ordered]
    running_max = [max(clocks[:i + 1]) for i in range(len(clocks))]
    fresh, warmup, unlearned = [], 0, 0
    for impression_ms in served.values():
        due_ms = impression_ms + window_ms
        if due_ms < serving_from + args.warmup_s * 1000:
            warmup += 1
            continue
        passed = bisect.bisect_right(event_times, due_ms + lateness_ms)  # the watermark passes due_ms
        i = bisect.bisect_left(running_max, due_ms)
        if i == len(ordered) or passed == len(event_times):
            unlearned += 1
            continue
        fresh.append((ordered[i][1][1] - first_read[passed]) / 1000)
    fresh.sort()
    pick = lambda q: fresh[min(len(fresh) - 1, int(q * len(fresh)))] if fresh else None  # noqa: E731
    result = {"duration_s": args.duration_s, "visits_per_s": args.visits_per_s, "history": args.history,
              "attribution_s": args.attribution_s, "allowed_lateness_s": args.allowed_lateness_s,
              "publish_every_s": args.publish_every_s, "served_impressions": len(served),
              "versions_seen": len(versions), "labels_measured": len(fresh), "labels_in_warmup": warmup,
              "labels_not_learned_at_stop": unlearned,
              "freshness_s": {"p50": pick(0.5), "p99": pick(0.99), "max": fresh[-1] if fresh else None},
              "status_lines": lines[-5:]}
    return result


def _watch(registry_path: str, versions: dict, stop: threading.Event) -> None:
    """Every version of MODEL the registry holds, read every 0.2 s (it keeps only the newest 10)."""
    registry = None
    while not stop.is_set():
        try:
            registry = registry or open_registry(registry_path)
            for v in registry.versions(MODEL):
                versions.setdefault(v.version, (v.clock_ms, v.published_ms))
        except Exception:  # noqa: BLE001 (not there yet)
            registry = None
        stop.wait(0.2)
    if registry is not None:
        registry.close()


def _tail(bootstrap: str, topic: str, arrivals: list, served: dict, stop: threading.Event) -> None:
    """Reads `topic` as it grows until `stop`: every record's (event time, read ms); the
    impressions the server served (it logs them with their model)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"freshness-{time.time_ns()}",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    schema = schemas.load("interaction")
    while not stop.is_set():
        message = consumer.poll(0.05)  # one at a time: each is stamped as soon as it is read
        read_ms = int(time.time() * 1000)
        if message is not None and message.error() is None:
            try:
                record = fastavro.schemaless_reader(io.BytesIO(message.value()), schema)
            except Exception:  # noqa: BLE001 (the history's malformed records)
                continue
            arrivals.append((record["event_time"], read_ms))
            if record["event_type"] == "impression" and record.get("model_key") is not None:
                served[record["event_id"]] = record["event_time"]
    consumer.close()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.freshness", description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration_s", type=float, default=180.0)
    parser.add_argument("--visits_per_s", type=float, default=4.0)
    parser.add_argument("--history", type=int, default=1000)
    parser.add_argument("--attribution_s", type=float, default=30.0)
    parser.add_argument("--allowed_lateness_s", type=float, default=5.0)
    parser.add_argument("--publish_every_s", type=float, default=1.0)
    parser.add_argument("--warmup_s", type=float, default=60.0)
    parser.add_argument("--port", type=int, default=18123)
    parser.add_argument("--topic", default="freshness.interactions")
    parser.add_argument("--bootstrap", default="127.0.0.1:19092")
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args(argv)
    result = measure(args)
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
