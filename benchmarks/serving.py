"""Serving latency under open-loop load: `python -m serving` answering /predict and
/recommendations at constant request rates from a separate load process (vegeta), and the
cold start.

    .venv/bin/python -m benchmarks.serving [--predict_rates 250,500,1000,2000] \\
        [--recommend_rates 50,100,200,400] [--batch_rates 250,500,1000,2000] \\
        [--kafka_rates 100,500,1000] [--workers 2 \\
        --server_cores 0,1 --load_cores 0,1] [--duration 10] [--json out.json]

It runs the main job once (`--impressions`, into a temporary folder) for a registry and an
online store, and the batch job (`pipelines.batch_serve`) for a batch of top lists, starts the server pinned to `--server_cores` (taskset) with its event log on, and
attacks it from vegeta pinned to `--load_cores`: open loop (requests leave at the rate whether
or not earlier ones were answered, so a slow answer does not hide the ones behind it, i.e. no
coordinated omission). Each rate runs `--duration` seconds after a short warm-up; rankings are
not cached (`--cache_s 0`): every /recommendations request ranks its 100 candidates, unless it
asks for the batch (`?source=batch`: a lookup of the same users' lists, target p99 3 ms).

Per rate it reports p50, p99 and max latency, the rate achieved and the share of errors, and per
endpoint the first rate whose p99 is over the target (/predict 5 ms, /recommendations 25 ms).
Right before each rate, the same load hits a do-nothing app on the server's stack and cores
(`benchmarks/floor.py`): its p99, the row's floor, is what the host and the load generator add
whatever the server does (`--no_floor` skips it). Each HTTP row also has the CPU the server's
processes used per request (user and system, from /proc), and the floor app's beside it: on a
shared host whose speed varies, the ratio of the two is steadier than either.
The cold start is from the process's start to its first answered /predict. With `--kafka_rates`
(a broker: `bash scripts/kafka.sh start`) the server also answers Kafka requests, sent here at
constant rates; their latency runs from each request's scheduled send to its reply (target 50 ms).
With `--learner_rate R` a streaming learner (`pipelines.recommend --source kafka --streaming`,
local runner) runs beside the server the whole time, publishing versions (hot reloaded) and
profiles to the stores the server reads, fed by the simulator at R records/s. The learner and
its feed are pinned to `--learner_cores` at niceness `--learner_nice` (10: on the core it shares
with the load and the broker it yields to them, as a deployment gives serving cores of its own);
the broker to `--broker_cores` while the benchmark runs (a JVM on the server's core stalled its
answers 20-65 ms). Rows start `--learner_settle_s` after the learner's first new version: its
start-up, a backlog of the feed to catch up on, is not the steady state. The Kafka rows' load is
this process, pinned to `--load_cores` meanwhile, after a 2 s warm-up like the HTTP rows'.

vegeta comes from the Go module proxy (`go install`, pinned, into .cache/go/bin): `scripts/setup.sh` builds it.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import pathlib
import random
import subprocess
import sys
import tempfile
import time

import requests

from benchmarks import floor
from benchmarks.beside import pin_broker, start_learner
from benchmarks.kafka_requests import kafka_attack, pinned
from benchmarks.memory import descendants

ROOT = pathlib.Path(__file__).resolve().parent.parent
SETTLE_S = 3.0
VEGETA = "github.com/tsenart/vegeta/v12@v12.13.0"
TARGETS_MS = {"predict": 5.0, "recommend": 25.0, "batch": 3.0, "kafka": 50.0}


def vegeta() -> str:
    """The vegeta binary, installed from the Go module proxy on first use."""
    binary = ROOT / ".cache" / "go" / "bin" / "vegeta"
    if not binary.exists():
        binary.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["go", "install", VEGETA], check=True, env={**os.environ, "GOBIN": str(binary.parent)})
    return str(binary)


def publish(impressions: int, out: pathlib.Path) -> None:
    """The main job's models and profiles, and a batch of top lists from them (`pipelines.batch_serve`)."""
    subprocess.run([sys.executable, "-m", "pipelines.recommend", "--impressions", str(impressions),
                    "--output", str(out)], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    subprocess.run([sys.executable, "-m", "pipelines.batch_serve", "--registry", str(out / "registry.sqlite"),
                    "--online_store", str(out / "online.sqlite"), "--store", str(out / "toplists.sqlite")],
                   check=True, cwd=ROOT, stdout=subprocess.DEVNULL)


def start_server(out: pathlib.Path, port: int, cores: str, workers: int, kafka: str | None = None,
                 experiment: str | None = None, extra=()) -> tuple[subprocess.Popen, float]:
    """The server (with `extra` flags), and seconds from its start to its first answered /predict."""
    command = [sys.executable, "-m", "serving", "--port", str(port), "--registry", str(out / "registry.sqlite"),
               "--online_store", str(out / "online.sqlite"), "--event_log", str(out / "served.avro"),
               "--cache_s", "0", "--seed", "1", "--workers", str(workers), "--batch_store", str(out / "toplists.sqlite")]
    command += (["--kafka_requests", kafka] if kafka else []) + (
        ["--experiment", os.path.abspath(experiment)] if experiment else []) + list(extra)
    start = time.monotonic()
    server = subprocess.Popen(["taskset", "-c", cores, *command], cwd=ROOT, stderr=subprocess.DEVNULL)
    body = {"user_id": "u00001", "item_id": "i00001", "item_genres": ["drama"], "position": 0}
    while True:
        try:
            if requests.post(f"http://127.0.0.1:{port}/predict", json=body, timeout=1).status_code == 200:
                return server, time.monotonic() - start
        except requests.ConnectionError:
            pass
        if server.poll() is not None or time.monotonic() - start > 60:
            raise RuntimeError("the server did not answer within 60 s")
        time.sleep(0.01)


def targets(out: pathlib.Path, port: int, endpoint: str, n: int = 2000, seed: int = 1) -> pathlib.Path:
    """vegeta's JSON targets: `n` requests over the users and items the job published."""
    from stores.online import open_online_store
    from stores.toplists import open_toplists

    store, rng = open_online_store(str(out / "online.sqlite")), random.Random(seed)
    # Batch lookups ask for the users the batch covers (a learner beside the server adds others).
    users = open_toplists(str(out / "toplists.sqlite")).users() if endpoint == "batch" else \
        [u for u, _, _ in store.scan("user")]
    items = [(i, state[1]) for i, state, _ in store.scan("item")]
    path = out / f"{endpoint}.targets"
    with open(path, "w") as f:
        for _ in range(n):
            user = rng.choice(users)
            if endpoint == "predict":
                item, genres = rng.choice(items)
                body = json.dumps({"user_id": user, "item_id": item, "item_genres": genres,
                                   "position": rng.randrange(10), "device": "tv"}).encode()
                target = {"method": "POST", "url": f"http://127.0.0.1:{port}/predict",
                          "body": base64.b64encode(body).decode(), "header": {"Content-Type": ["application/json"]}}
            else:
                source = "batch" if endpoint == "batch" else "live"
                target = {"method": "GET", "url": f"http://127.0.0.1:{port}/recommendations/{user}?k=10&source={source}"}
            f.write(json.dumps(target) + "\n")
    return path


def cpu_s(root: int) -> float:
    """CPU seconds (user and system) used so far by process `root` and those under it (a server's workers)."""
    ticks = 0
    for pid in descendants(root):
        try:
            stat = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        ticks += int(stat[11]) + int(stat[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def attack(binary: str, target_file: pathlib.Path, rate: int, duration: float, cores: str,
           server: int | None = None) -> dict:
    """One constant-rate run: vegeta's JSON report, latencies in ms; with the `server`'s pid, the
    CPU it used per request."""
    used = cpu_s(server) if server else 0.0
    attack = subprocess.Popen(["taskset", "-c", cores, binary, "attack", "-format=json", f"-targets={target_file}",
                               f"-rate={rate}/1s", f"-duration={duration}s", "-timeout=10s"], stdout=subprocess.PIPE)
    report = subprocess.run([binary, "report", "-type=json"], stdin=attack.stdout, capture_output=True, check=True)
    attack.wait()
    data = json.loads(report.stdout)
    ms = {k: v / 1e6 for k, v in data["latencies"].items()}
    cpu_us = round((cpu_s(server) - used) / data["requests"] * 1e6) if server and data["requests"] else None
    return {"rate": rate, "achieved": round(data["rate"], 1), "requests": data["requests"],
            "errors": round(1.0 - data["success"], 4), "status_codes": data["status_codes"],
            "p50_ms": round(ms["50th"], 3), "p99_ms": round(ms["99th"], 3), "max_ms": round(ms["max"], 3),
            "cpu_us_per_request": cpu_us}


def run(args) -> dict:
    binary = vegeta()
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        out = pathlib.Path(tmp)
        publish(args.impressions, out)
        port, prefix = args.port, f"bench-serving-{os.getpid()}"
        kafka = f"kafka://{args.bootstrap}/{prefix}" if args.kafka_rates else None
        broker_had = pin_broker(args.broker_cores) if args.learner_rate or args.kafka_rates else None
        server, cold_start_s = start_server(out, port, args.server_cores, args.workers, kafka, args.experiment)
        base = floor.start(port + 1, args.server_cores) if args.floor else None
        floor_file = floor.targets(port + 1, out) if base else None
        learning = start_learner(out, args.bootstrap, args.learner_rate, prefix,
                                 args.learner_cores, args.learner_nice) if args.learner_rate else []
        time.sleep(args.learner_settle_s if learning else 0)  # past its start: it caught up on the feed's backlog
        results = {"cold_start_s": round(cold_start_s, 3), "server_cores": args.server_cores, "workers": args.workers,
                   "experiment": args.experiment, "load_cores": args.load_cores, "duration_s": args.duration,
                   "broker_cores": args.broker_cores if broker_had else None,
                   "learner": (f"running (streaming, local runner, on cores {args.learner_cores or 'any'}, "
                               f"nice {args.learner_nice}), "
                               f"input {args.learner_rate:g} records/s, measured from {args.learner_settle_s:g} s "
                               "after its first new version"
                               if args.learner_rate else "not running")}
        try:
            for endpoint, rates in (("predict", args.predict_rates), ("recommend", args.recommend_rates),
                                    ("batch", args.batch_rates)):
                if not rates:
                    continue
                target_file = targets(out, port, endpoint)
                attack(binary, target_file, rates[0], 2, args.load_cores)  # warm-up, not reported
                rows = []
                for rate in rates:
                    time.sleep(SETTLE_S)  # the server drains what the last rate left (queue, event log)
                    host = attack(binary, floor_file, rate, args.duration, args.load_cores, base.pid) if base else {}
                    rows.append({**attack(binary, target_file, rate, args.duration, args.load_cores, server.pid),
                                 "floor_p99_ms": host.get("p99_ms"), "floor_cpu_us_per_request": host.get("cpu_us_per_request")})
                over = [r["rate"] for r in rows if r["p99_ms"] > TARGETS_MS[endpoint] or r["errors"] > 0]
                results[endpoint] = {"target_p99_ms": TARGETS_MS[endpoint], "rows": rows,
                                     "first_rate_over_target": over[0] if over else None}
            if args.kafka_rates:
                bodies = [json.loads(base64.b64decode(json.loads(line)["body"]))
                          for line in open(targets(out, port, "predict"))]
                with pinned(args.load_cores):  # this process is the load here
                    kafka_attack(args.bootstrap, prefix, bodies, args.kafka_rates[0], 2)  # warm-up, not reported
                    rows = [kafka_attack(args.bootstrap, prefix, bodies, rate, args.duration)
                            for rate in args.kafka_rates]
                over = [r["rate"] for r in rows if r["p99_ms"] is None or r["p99_ms"] > TARGETS_MS["kafka"]
                        or r["errors"] > 0]
                results["kafka"] = {"target_p99_ms": TARGETS_MS["kafka"], "rows": rows,
                                    "first_rate_over_target": over[0] if over else None}
            if learning:
                from stores.registry import open_registry
                registry = open_registry(str(out / "registry.sqlite"))
                results["learner"] += f"; it published up to version {registry.latest('recommender').version}"
                registry.close()
        finally:
            for process in [server, *learning, *([base] if base else [])]:
                process.terminate()
                process.wait(30)
            if learning:  # what the learner started (its runner) goes too
                subprocess.run(["pkill", "-KILL", "-s", str(learning[-1].pid)], check=False)
            if broker_had:
                pin_broker(broker_had)
    return results


def table(results: dict) -> str:
    lines = [f"cold start (process start -> first /predict answered): {results['cold_start_s']} s; "
             f"server ({results['workers']} worker(s)) on cores {results['server_cores']}, load on {results['load_cores']}; "
             f"learner {results['learner']}" + (f"; broker on cores {results['broker_cores']}"
                                                 if results.get("broker_cores") else ""),
             "| endpoint | rate/s | achieved | p50 ms | p99 ms | max ms | errors | floor p99 ms | CPU us/request (floor's) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for endpoint in ("predict", "recommend", "batch", "kafka"):
        if endpoint not in results:
            continue
        for r in results[endpoint]["rows"]:
            lines.append(f"| {endpoint} | {r['rate']} | {r['achieved']} | {r['p50_ms']} | {r['p99_ms']} | "
                         f"{r['max_ms']} | {r['errors']:.2%} | {r.get('floor_p99_ms') or '-'} | "
                         f"{_shown(r.get('cpu_us_per_request'))} ({_shown(r.get('floor_cpu_us_per_request'))}) |")
        lines.append(f"{endpoint}: p99 target {results[endpoint]['target_p99_ms']} ms, first rate over it: "
                     f"{results[endpoint]['first_rate_over_target']}")
    return "\n".join(lines)


def _shown(value) -> str:
    return "-" if value is None else str(value)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.serving", description=__doc__.split("\n\n")[0])
    rates = lambda text: [int(r) for r in text.split(",") if r]  # noqa: E731
    parser.add_argument("--predict_rates", type=rates, default=[250, 500, 1000, 2000])
    parser.add_argument("--recommend_rates", type=rates, default=[50, 100, 200, 400])
    parser.add_argument("--batch_rates", type=rates, default=[250, 500, 1000, 2000],
                        help="/recommendations answered from the batch store (?source=batch), requests/s")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per rate (default: %(default)s)")
    parser.add_argument("--impressions", type=int, default=20_000, help="the main job's size (default: %(default)s)")
    parser.add_argument("--server_cores", default="0", help="taskset cores of the server (default: %(default)s)")
    parser.add_argument("--load_cores", default="1", help="taskset cores of vegeta (default: %(default)s)")
    parser.add_argument("--kafka_rates", type=rates, default=[],
                        help="Kafka request -> reply at these rates too (needs a broker: bash scripts/kafka.sh start)")
    parser.add_argument("--bootstrap", default="127.0.0.1:19092", help="the broker (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=1, help="server processes (default: %(default)s)")
    parser.add_argument("--learner_rate", type=float, default=0,
                        help="run a streaming learner beside the server at this input, records/s (default: none)")
    parser.add_argument("--learner_cores", default="1",
                        help="taskset cores of the learner and its input ('': any; default: %(default)s)")
    parser.add_argument("--learner_settle_s", type=float, default=60,
                        help="seconds between the learner's first new version and the first row: its start-up "
                             "(a backlog of the feed to catch up on) is not the steady state (default: %(default)s)")
    parser.add_argument("--broker_cores", default="1",
                        help="taskset cores of the broker while the benchmark runs ('': as it was; default: %(default)s)")
    parser.add_argument("--learner_nice", type=int, default=10,
                        help="niceness of the learner and its input: it yields the cores it shares to the load and the "
                             "broker, as a deployment gives serving cores of its own (default: %(default)s)")
    parser.add_argument("--port", type=int, default=18123)
    parser.add_argument("--experiment", metavar="FILE", help="the server routes by this experiment (default: none)")
    parser.add_argument("--no_floor", dest="floor", action="store_false",
                        help="skip the floor rows (benchmarks/floor.py: a do-nothing app under the same load)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    results = run(args)
    print(table(results))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
