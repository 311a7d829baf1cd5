"""A rollback under load (issue 17): how long the server takes to switch, and that no request fails.

    .venv/bin/python -m benchmarks.rollback_switch [--rate 200] [--rollbacks 6] [--json out.json]

The main job publishes its model (v1); a second version learned on is published (v2). A server
(`python -m serving`, its default poll) answers /predict under vegeta's constant `--rate`, while
`python -m pipelines.rollback` rolls the model back `--rollbacks` times, alternating between v1
and v2, every few seconds. A probe asks /predict every 5 ms and logs the version that answered.

Reported: each switch time (the rollback version's publication to the probe's first answer from
it), and vegeta's requests, errors and status codes over the whole run.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import requests

from benchmarks.serving import ROOT, attack, publish, start_server, targets, vegeta
from core.publishing import load_version
from models import serde
from stores.registry import open_registry

BODY = {"user_id": "u00001", "item_id": "i00001", "item_genres": ["drama"], "position": 0}


def run(args) -> dict:
    binary = vegeta()
    with tempfile.TemporaryDirectory(prefix="bench-rollback-") as tmp:
        out = pathlib.Path(tmp)
        publish(args.impressions, out)
        registry = open_registry(str(out / "registry.sqlite"))
        first = registry.latest("recommender")
        keys = serde.store_key(registry.path)
        model = load_version(registry, first, keys)
        for _ in range(50):  # a version that answers otherwise
            model.learn_one({"user_id": "u00001", "item_id": "i00001", "device": "tv", "position": "0", "hour": "1"}, True)
        second = registry.publish("recommender", serde.dumps(model, keys), step=first.step + 1,
                                  clock_ms=first.clock_ms + 1)
        target_file = targets(out, args.port, "predict")
        server, _ = start_server(out, args.port, args.server_cores, 1)
        seen, stop = [], threading.Event()
        probe = threading.Thread(target=_probe, args=(args.port, seen, stop))
        try:
            probe.start()
            load = {}
            loading = threading.Thread(target=lambda: load.update(attack(
                binary, target_file, args.rate, args.rollbacks * args.every_s + 4, args.load_cores)))
            loading.start()
            time.sleep(2)
            published = []
            for i in range(args.rollbacks):
                to = (first if i % 2 == 0 else second).version
                subprocess.run([sys.executable, "-m", "pipelines.rollback", "--registry", str(out / "registry.sqlite"),
                                "--to", str(to), "--reason", "benchmark"], check=True, cwd=ROOT, capture_output=True)
                published.append(registry.latest("recommender"))
                time.sleep(args.every_s)
            loading.join()
        finally:
            stop.set()
            probe.join()
            server.terminate()
            server.wait(30)
            registry.close()
    switches = []
    for version in published:
        answered = [t for t, v in seen if v == version.version]
        switches.append(round(min(answered) - version.published_ms, 1) if answered else None)
    done = [s for s in switches if s is not None]
    return {"rate": args.rate, "rollbacks": args.rollbacks, "poll_s": "server default", "switch_ms": switches,
            "median_switch_ms": statistics.median(done) if done else None, "max_switch_ms": max(done, default=None),
            "load": load, "versions": [first.version, second.version] + [v.version for v in published]}


def _probe(port: int, seen: list, stop: threading.Event) -> None:
    with requests.Session() as session:
        while not stop.is_set():
            answer = session.post(f"http://127.0.0.1:{port}/predict", json=BODY, timeout=5)
            seen.append((time.time() * 1000, answer.json().get("model_version")))
            time.sleep(0.005)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.rollback_switch", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=int, default=200, help="/predict requests per second (default: %(default)s)")
    parser.add_argument("--rollbacks", type=int, default=6)
    parser.add_argument("--every_s", type=float, default=3.0)
    parser.add_argument("--impressions", type=int, default=4000)
    parser.add_argument("--port", type=int, default=18431)
    parser.add_argument("--server_cores", default="0")
    parser.add_argument("--load_cores", default="1")
    parser.add_argument("--json", help="Write the results here.")
    args = parser.parse_args(argv)
    results = run(args)
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        pathlib.Path(args.json).write_text(text + "\n")
    return results


if __name__ == "__main__":
    main()
