"""See it live: the whole loop on this machine, with one command.

    python -m pipelines.live                 # Ctrl-C stops every process it started
    python -m pipelines.live --history 200   # a short past: popularity until the first model

It starts, each logging to the output folder (`out/live`):

1. the Kafka broker (`scripts/kafka.sh`), unless one answers at `--bootstrap` already;
2. a fresh interactions topic, and a simulated history that ends now (`--history`
   impressions of the simulator's world), so the learner has something to learn at once;
3. the streaming learner (`pipelines.recommend --source kafka --streaming` on the local
   runner), publishing model versions and profiles to `registry.sqlite` and `online.sqlite`;
4. the serving process (`python -m serving`) over them, logging every impression it serves
   and every outcome to the topic: the learner learns what was served;
5. simulated users (`simulator.users`) of the same world, asking for recommendations and
   clicking by their true click probability (the truth goes to `truth.jsonl`, apart).

With `--experiment FILE` (`experiments.config`), the learner learns the experiment's variants,
the server routes by it, and its owner (`pipelines.experiment`) decides and writes the report
to `OUTPUT/experiment/report.md`; the status line gives CTR per variant.

With `--arms live,batch`, a second server answers from a batch of top lists first
(`--batch_first`): `pipelines.batch_serve` recomputes the batch every `--batch_every_s` seconds
from the newest model and profiles; each user always asks the same arm. `--drift_after_s`
turns the users' tastes to the world's drifted ones after that long. `benchmarks.tradeoffs`
runs it so to compare batch and real-time serving in the closed loop.

It prints the URL, then a status line every `--status_s` seconds: the version served, what the
learner has learned, and the users' click-through rate by the source that ranked for them.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import threading
import time

import requests

from core import kafka
from experiments import config
from pipelines.console import QUIET, UserError, main
from pipelines.livechildren import Child, owner_command, start_kafka
from simulator import SimulatorConfig, generate
from simulator.users import SimulatedUsers
from simulator.world import DEVICES
from stores.online import open_online_store
from stores.registry import open_registry
from stores.toplists import open_toplists

MODEL = "recommender"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pipelines.live", description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default="out/live", help="folder for the stores, logs and truth (default: %(default)s; "
                        "its files from an earlier run are replaced)")
    parser.add_argument("--bootstrap", default="127.0.0.1:19092", help="Kafka bootstrap servers (default: %(default)s)")
    parser.add_argument("--topic", default="live.interactions",
                        help="interactions topic, created afresh (default: %(default)s)")
    parser.add_argument("--kafka_out", default="live", metavar="PREFIX",
                        help="the learner's predictions, metrics and dead letters go to PREFIX.predictions, ... "
                             "(default: %(default)s)")
    parser.add_argument("--host", default="127.0.0.1", help="the server's address (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8000, help="the server's port (default: %(default)s)")
    parser.add_argument("--history", type=int, default=3000,
                        help="impressions of simulated history before now, at least 100: the items it shows are "
                             "the candidates (default: %(default)s)")
    parser.add_argument("--users", type=int, default=200, help="simulated users (default: %(default)s)")
    parser.add_argument("--visits_per_s", type=float, default=4.0,
                        help="simulated users' visits per second, 5 items each (default: %(default)s)")
    parser.add_argument("--attribution_s", type=float, default=30.0,
                        help="attribution window: an impression without a click within it is a "
                             "negative label (default: %(default)s)")
    parser.add_argument("--allowed_lateness_s", type=float, default=5.0,
                        help="how far behind the newest event an event may arrive (default: %(default)s)")
    parser.add_argument("--publish_every_s", type=float, default=1.0,
                        help="the learner publishes a model version at least this often (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=7, help="the simulated world's seed (default: %(default)s)")
    parser.add_argument("--status_s", type=float, default=10.0, help="seconds between status lines (default: %(default)s)")
    parser.add_argument("--duration_s", type=float, help="stop after this long (default: run until Ctrl-C)")
    parser.add_argument("--arms", default="live", help="comma-separated servers the users are split over, each "
                        "user always the same: live (real-time ranking), batch (top lists computed ahead, "
                        "--batch_first) (default: %(default)s)")
    parser.add_argument("--batch_every_s", type=float, default=120.0,
                        help="the batch arm's top lists are recomputed this often (default: %(default)s)")
    parser.add_argument("--drift_after_s", type=float, help="the users' tastes drift after this long (default: never)")
    parser.add_argument("--taste_alarm", choices=("off", "reset"), default="off",
                        help="the learner's taste alarm (pipelines.recommend --taste_alarm; default: %(default)s)")
    parser.add_argument("--experiment", metavar="FILE", type=config.path_argument, help="run this experiment (JSON or YAML): learner, "
                        "server and its owner (default: none)")
    parser.add_argument("--caught_up", action="store_true",
                        help="the users start (and the first batch is ranked) once the learner has caught up with the "
                             "history: it has learned the labels due until two attribution windows before its end")
    args = parser.parse_args(argv)
    args.arms = list(dict.fromkeys(a.strip() for a in args.arms.split(",") if a.strip()))
    if not args.arms or set(args.arms) - {"live", "batch"}:
        parser.error("--arms: live and/or batch")
    if args.history < 100 or args.users < 1 or args.visits_per_s <= 0 or args.attribution_s < 10:
        # Without a past there are no item profiles, so no candidates: rankings would be empty.
        parser.error("need --history >= 100, --users >= 1, --visits_per_s > 0 and --attribution_s >= 10")
    return args


def run(argv=None, console=QUIET) -> dict:
    """Runs the loop until Ctrl-C (or `--duration_s`); returns the users' summary per source."""
    args = parse_args(argv)
    out = os.path.abspath(args.output)
    os.makedirs(out, exist_ok=True)
    registry, online, truth = f"{out}/registry.sqlite", f"{out}/online.sqlite", f"{out}/truth.jsonl"
    _clear(out)
    # One key signs and checks this run's versions; it lives in the children's environment only.
    env = {**os.environ, "STREAMML_STATE_KEY": os.environ.get("STREAMML_STATE_KEY") or secrets.token_hex(32),
           "PYTHONUNBUFFERED": "1"}
    started: list[Child] = []
    stop = threading.Event()
    signal.signal(signal.SIGTERM, _interrupted)  # a `kill` stops the children as Ctrl-C does
    try:
        broker = start_kafka(args.bootstrap, out, console)
        if broker:
            started.append(broker)
        world = SimulatorConfig(seed=args.seed, users=args.users, impressions=args.history, drift_at=1.0,
                                attribution_window_ms=int(args.attribution_s * 1000),
                                start_ms=int(time.time() * 1000) - args.history * 600)
        history_end_ms = world.start_ms + args.history * 600  # about: the simulator's mean gap
        kafka.recreate_topic(args.bootstrap, args.topic, partitions=1)
        sent = kafka.produce(generate(world), args.bootstrap, args.topic, "interaction", "user_id")
        console.say(f"wrote {sent:,} records of simulated history ({args.history:,} impressions of "
                    f"{args.users} users, the last ~{args.history * 0.6 / 60:.0f} minutes) to {args.topic!r}")
        made = [open_registry(registry), open_online_store(online)]
        made += [open_toplists(_toplists(registry))] if "batch" in args.arms else []
        for store in made:
            store.close()  # made now: the servers start before the first version is published
        learner = Child("learner", _learner_command(args, out, registry, online), f"{out}/learner.log", env)
        started.append(learner)
        urls = {arm: f"http://{args.host}:{args.port + i}" for i, arm in enumerate(args.arms)}
        for arm, url in urls.items():
            server = Child(_name(arm), _server_command(args, arm, url, registry, online), f"{out}/{_name(arm)}.log", env)
            started.append(server)
            server.wait_for(lambda url=url: requests.get(f"{url}/v2/health/live", timeout=1).ok, 60)
        if args.experiment:
            started.append(Child("experiment owner", owner_command(args, out, registry), f"{out}/experiment.log", env))
        if args.caught_up:
            console.say("waiting for the learner to catch up with the history")
            until_ms = history_end_ms - int(2 * args.attribution_s * 1000)
            learner.wait_for(lambda: _caught_up(registry, until_ms), 600)
        if "batch" in urls:
            refresher = threading.Thread(target=_refresh_batches, daemon=True, args=(
                args, registry, online, f"{out}/batch.log", env, stop))
            refresher.start()
        console.say(f"started: {', '.join(f'{c.name} (pid {c.pid})' for c in started if c.name != 'Kafka broker')}; "
                    f"logs in {out}")
        url = urls[args.arms[0]]
        console.say(f"serving at {url}  (try {url}/recommendations/u00001?k=5, {url}/models, {url}/metrics)")
        drift_at_ms = int((time.time() + args.drift_after_s) * 1000) if args.drift_after_s is not None else None
        users = SimulatedUsers(world, urls, truth, k=5, seed=args.seed, drift_at_ms=drift_at_ms)
        summary: dict = {}
        visiting = threading.Thread(target=_visit, args=(users, args.visits_per_s, stop, summary), daemon=True)
        visiting.start()
        deadline = time.monotonic() + args.duration_s if args.duration_s else None
        while deadline is None or time.monotonic() < deadline:
            stop.wait(min(args.status_s, max(0.0, deadline - time.monotonic())) if deadline else args.status_s)
            for child in started:
                child.check()
            if "error" in summary:
                raise UserError(f"the simulated users stopped: {summary['error']}")
            console.say(_status(url, summary))
        return {source: dict(counts) for source, counts in summary.items()}
    finally:
        stop.set()
        for child in reversed(started):
            child.stop()
        console.say("stopped: " + (", ".join(f"{c.name} (pid {c.pid})" for c in reversed(started)) or "nothing started"))


def _learner_command(args, out: str, registry: str, online: str) -> list:
    """The streaming learner on the local runner: the recommender only, over the topic."""
    return [sys.executable, "-m", "pipelines.recommend", "--source", "kafka", "--streaming", "--no_baselines",
            "--bootstrap", args.bootstrap, "--topic", args.topic, "--kafka_out", args.kafka_out,
            "--group", f"live-{secrets.token_hex(4)}", "--output", out, "--registry", registry, "--online_store", online,
            "--attribution_minutes", str(args.attribution_s / 60), "--metrics_minutes", "1",
            "--allowed_lateness_s", str(args.allowed_lateness_s), "--publish_every_s", str(args.publish_every_s),
            "--taste_alarm", args.taste_alarm, *(["--experiment", args.experiment] if args.experiment else [])]


def _caught_up(registry: str, until_ms: int) -> bool:
    """The learner has published a version that has learned the labels due until `until_ms`
    (the history's last ones come due only once new events move its watermark)."""
    with contextlib.closing(open_registry(registry)) as versions:
        newest = versions.latest(MODEL)
    return newest is not None and newest.clock_ms >= until_ms


def _name(arm: str) -> str:
    return "server" if arm == "live" else f"{arm}-server"


def _server_command(args, arm: str, url: str, registry: str, online: str) -> list:
    """The server over the learner's stores, logging what it serves to the learner's topic; the
    batch arm's answers from the batch store first."""
    batch = ["--batch_store", _toplists(registry), "--batch_first"] if arm == "batch" else []
    return [sys.executable, "-m", "serving", "--host", args.host, "--port", url.rsplit(":", 1)[1],
            "--registry", registry, "--online_store", online, "--event_log", f"kafka://{args.bootstrap}/{args.topic}",
            "--model", MODEL, *batch, *(["--experiment", args.experiment] if args.experiment else [])]


def _toplists(registry: str) -> str:
    return os.path.join(os.path.dirname(registry), "toplists.sqlite")


def _refresh_batches(args, registry: str, online: str, log: str, env: dict, stop: threading.Event) -> None:
    """`pipelines.batch_serve` every `--batch_every_s` from the newest version, once there is one,
    features as of now (or the store's newest event, if a moment later)."""
    while not stop.is_set():
        with contextlib.closing(open_registry(registry)) as versions, contextlib.closing(open_online_store(online)) as store:
            ready, as_of = versions.latest(MODEL) is not None, max(int(time.time() * 1000), store.clock() or 0)
        if not ready:
            stop.wait(1.0)
            continue
        with open(log, "a") as f:
            subprocess.run([sys.executable, "-m", "pipelines.batch_serve", "--registry", registry, "--online_store",
                            online, "--store", _toplists(registry), "--as_of", str(as_of),
                            "--devices", ",".join(("", *DEVICES))],  # the users ask with their device
                           stdout=f, stderr=subprocess.STDOUT, env=env)
        stop.wait(args.batch_every_s)


def _interrupted(signum, frame):
    raise KeyboardInterrupt


def _clear(out: str) -> None:
    """Removes the files an earlier run wrote in `out` (its stores start afresh with the topic),
    and only those."""
    ours = ("registry.sqlite", "online.sqlite", "toplists.sqlite", "truth.jsonl", "learner.log", "server.log",
            "batch-server.log", "batch.log", "kafka.log", "experiment.log")
    for name in os.listdir(out):
        stores = name.startswith(("learner-live-", "features-live-")) and ".sqlite" in name
        if stores or name.startswith(ours[:3]) or name in ours:
            os.remove(os.path.join(out, name))


def _visit(users: SimulatedUsers, per_s: float, stop: threading.Event, summary: dict) -> None:
    """Visits at `per_s` until `stop`; counts impressions and clicks by the source that ranked."""
    start, n = time.monotonic(), 0
    try:
        while not stop.is_set():
            stop.wait(max(0.0, start + n / per_s - time.monotonic()))
            n += 1
            for truth in users.visit():
                key = truth["source"] if len(users.arms) == 1 else f"{truth['arm']} arm, {truth['source']}"
                key = f"{key}, {truth['variant']}" if truth.get("variant") else key
                counts = summary.setdefault(key, {"impressions": 0, "clicks": 0})
                counts["impressions"] += 1
                counts["clicks"] += truth["outcome"] == "click"
    except Exception as e:  # noqa: BLE001 (said by the main loop, which stops everything)
        summary["error"] = f"{type(e).__name__}: {e}"
    finally:
        users.close()


def _status(url: str, summary: dict) -> str:
    """One line: the version served and what it learned; the users' CTR by source."""
    try:
        models = requests.get(f"{url}/models", timeout=2).json().get("models", [])
    except (requests.RequestException, ValueError):
        models = []
    served = next((m for m in models if m.get("model") == MODEL), None)
    model = (f"{MODEL} v{served['version']} ({served['step']:,} labels learned, the last due "
             f"{time.time() - served['clock_ms'] / 1000:.0f} s ago; published {served['age_s']:.1f} s ago)"
             if served else "no model yet (popularity fallback)")
    ctr = "; ".join(f"{source}: {c['impressions']:,} shown, CTR {c['clicks'] / c['impressions']:.3f}"
                    for source, c in sorted(dict(summary).items()) if source != "error" and c["impressions"])
    return f"{time.strftime('%H:%M:%S')}  {model}  |  {ctr or 'no visits yet'}"


if __name__ == "__main__":
    from pipelines import live
    sys.exit(main(live.run))
