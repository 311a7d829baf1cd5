"""Retraining on a window of recent history: once, on a schedule, or when monitoring asks.

    python -m pipelines.retrain --events history.avro                  # once: the last 24 h
    python -m pipelines.retrain --events history.avro --every_hours 6  # on a schedule, until Ctrl-C
    python -m pipelines.retrain --events history.avro --on kafka://127.0.0.1:19092/streamml.signals

Each run is `pipelines.train` over the file as it is then: it learns the `--window_hours` before
the newest `--holdout_hours` of impressions, evaluates on those, and registers a pinned
`candidate` that promotion or an experiment then judges (`--promote_if_better` promotes it at
once when it beats production on the held-out range).

With `--on`, a run starts for each record `{"signal": "retrain", "reason": ...}` on the topic, in
JSON or as an Avro `alert` (a guarded `pipelines.recommend --kafka_out PREFIX` writes them to
`PREFIX.alerts` when quality decays); other records (alerts of other kinds) are skipped. Signals that arrive during a run, or together, make one run after it. The
consumer group (`--group`) commits the signals once their run has registered its candidate, so
that a restarted retrainer acts on each signal once. A run that fails (e.g. no impression in
the window yet) is logged, and the retrainer waits for the next turn.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time

from core.kafka import decode, parse_location
from pipelines import train
from pipelines.console import QUIET, ArgumentParser, UserError, add_verbose_flag, main

LOG = logging.getLogger("pipelines.retrain")
HOUR_MS = 3_600_000


def parse_args(argv=None):
    parser = ArgumentParser(prog="python -m pipelines.retrain", description=__doc__.split("\n\n")[0],
                            epilog="Any other flag goes to pipelines.train's Beam pipeline (e.g. --runner).")
    parser.add_argument("--events", required=True, help="History of interactions, an Avro file (read anew each run).")
    parser.add_argument("--window_hours", type=float, default=24.0, help="Learned (default: %(default)s).")
    parser.add_argument("--holdout_hours", type=float, default=2.0,
                        help="The newest hours, evaluated on (default: %(default)s).")
    parser.add_argument("--every_hours", type=float, help="Run on this schedule, until stopped (default: once).")
    parser.add_argument("--on", metavar="kafka://HOST:PORT/TOPIC", help="Run when a retrain signal arrives there.")
    parser.add_argument("--group", default="streamml-retrain", help="Consumer group of --on (default: %(default)s).")
    parser.add_argument("--max_runs", type=int, help="Stop after this many runs (default: no limit).")
    parser.add_argument("--model", default="models.zoo:recommender", help="(default: %(default)s)")
    parser.add_argument("--model_key", default="recommender", help="(default: %(default)s)")
    parser.add_argument("--registry", default="out/recommend/registry.sqlite", help="(default: %(default)s)")
    parser.add_argument("--output", default="out/retrain", help="Each run's pipelines.train output (default: "
                                                                "%(default)s/run-N).")
    parser.add_argument("--promote_if_better", action="store_true")
    add_verbose_flag(parser)
    args, beam_args = parser.parse_job_args(argv)
    if not os.path.isfile(args.events):
        parser.error(f"no such file: --events {args.events}")
    if args.window_hours <= 0 or args.holdout_hours <= 0:
        parser.error("--window_hours and --holdout_hours must be > 0")
    if args.every_hours is not None and args.on:
        parser.error("give --every_hours or --on, not both")
    if args.every_hours is not None and args.every_hours <= 0:
        parser.error("--every_hours must be > 0")
    if args.on:
        try:
            args.bootstrap, args.topic = parse_location(args.on, "--on")
        except ValueError as e:
            parser.error(str(e))
    return args, beam_args


def run(argv=None, console=QUIET) -> list:
    """Runs as the flags say; returns each run's `pipelines.train` summary (or its error)."""
    args, beam_args = parse_args(argv)
    runs = []

    def once(reason: str):
        runs.append(retrain(args, beam_args, len(runs) + 1, reason, console))

    if args.on:
        _on_signals(args, once)
    elif args.every_hours is None:
        once("once")
        if "error" in runs[-1]:
            raise UserError(runs[-1]["error"])
    else:
        while args.max_runs is None or len(runs) < args.max_runs:
            started = time.monotonic()
            once(f"every {args.every_hours:g} h")
            time.sleep(max(0.0, args.every_hours * 3600 - (time.monotonic() - started)))
    return runs


def retrain(args, beam_args, n: int, reason: str, console=QUIET) -> dict:
    """One `pipelines.train` run over the window that ends at the file's newest impression."""
    newest = newest_impression(args.events)
    if newest is None:
        return {"reason": reason, "error": f"no valid impression in {args.events} yet"}
    split = newest - int(args.holdout_hours * HOUR_MS)
    flags = ["--events", args.events, "--train_from", str(split - int(args.window_hours * HOUR_MS)), "--split",
             str(split), "--model", args.model, "--model_key", args.model_key, "--registry", args.registry,
             "--output", f"{args.output.rstrip('/')}/run-{n}", *(["--promote_if_better"] if args.promote_if_better else []),
             *beam_args]
    console.say(f"retraining ({reason}): {args.window_hours:g} h before {split} ms, held out to {newest} ms")
    try:
        summary = train.run(flags, console)
    except UserError as e:
        LOG.error("retraining (%s) registered nothing: %s", reason, e)
        console.say(f"retraining ({reason}) registered nothing: {e}")
        return {"reason": reason, "error": str(e)}
    return {"reason": reason, **summary}


def newest_impression(path: str) -> int | None:
    return max(train.impression_times(path), default=None)


def _on_signals(args, once) -> None:
    """Runs `once(reason)` for retrain signals on the topic, several waiting at once making one run."""
    from confluent_kafka import Consumer

    consumer = Consumer({"bootstrap.servers": args.bootstrap, "group.id": args.group, "enable.auto.commit": False,
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([args.topic])
    done = 0
    try:
        while args.max_runs is None or done < args.max_runs:
            reasons = []
            for message in consumer.consume(100, timeout=1.0):
                if message.error() is not None:
                    LOG.warning("signals: %s", message.error())
                    continue
                reason = _signal(message.value())
                if reason is None:  # an alert, or not for us
                    LOG.info("not a retrain signal, skipped: %r", (message.value() or b"")[:200])
                else:
                    reasons.append(reason)
            if reasons:
                once("; ".join(dict.fromkeys(reasons)))
                consumer.commit(asynchronous=False)  # acted on: a restart does not run them again
                done += 1
    finally:
        consumer.close()


def _signal(value: bytes | None) -> str | None:
    """The reason of a retrain signal, or None for any other record. A signal is JSON, or an
    `alert` record in schemaless Avro (what a guarded `pipelines.recommend` writes to
    `PREFIX.alerts`)."""
    try:
        record = json.loads(value or b"")
    except ValueError:
        record = decode(value, "alert")
    if not isinstance(record, dict) or record.get("signal") != "retrain":
        return None
    return str(record.get("reason") or "a retrain signal")


if __name__ == "__main__":
    from pipelines import retrain as module
    sys.exit(main(module.run))
