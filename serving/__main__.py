"""`python -m serving`: the serving process on 127.0.0.1:8000, from the main job's outputs.

    python -m pipelines.recommend      # learns, publishes models and profiles to out/recommend/
    python -m serving                  # serves them: http://127.0.0.1:8000/openapi.json
                                       # and the live dashboard: http://127.0.0.1:8000/dashboard
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

import uvicorn

from core.kafka import parse_location
from experiments import config
from models import serde
from serving.app import create_app, settings_to_environment
from serving.eventlog import check_location
from serving.kafka_rpc import parse_requests_location
from serving.service import Settings
from stores.online import open_online_store
from stores.registry import open_registry

DEFAULT_OUTPUT = "out/recommend"  # where the main job publishes by default
GRACE_S = 5


def parse_args(argv=None) -> tuple[argparse.Namespace, Settings]:
    parser = argparse.ArgumentParser(prog="python -m serving", description=(
        "Serve predictions over HTTP from the newest verified model version in a registry and the "
        "profiles in an online store, as the learning plane publishes them."))
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8000, help="port (default: %(default)s)")
    parser.add_argument("--registry", default=f"{DEFAULT_OUTPUT}/registry.sqlite",
                        help="the model registry: a SQLite file or postgresql://USER@HOST:PORT/DB "
                             "(default: %(default)s, the main job's)")
    parser.add_argument("--online_store", default=f"{DEFAULT_OUTPUT}/online.sqlite",
                        help="the online store of profiles: a SQLite file or redis://HOST:PORT/DB "
                             "(default: %(default)s, the main job's)")
    parser.add_argument("--model", default="recommender", help="the model key to serve (default: %(default)s)")
    parser.add_argument("--key_file", help="keyring file that checks model versions (default: "
                                           "$STREAMML_STATE_KEY, else the key file beside the registry)")
    parser.add_argument("--poll_s", type=float, default=0.2,
                        help="seconds between looks for a newer model version (default: %(default)s)")
    parser.add_argument("--event_log", default=f"{DEFAULT_OUTPUT}/served.avro", help=(
        "where every served impression and every POST /events outcome is logged for the learning plane: "
        "kafka://HOST:PORT/TOPIC (the streaming learner's interactions topic) or an .avro file, "
        "appended to (default: %(default)s)"))
    parser.add_argument("--schema_registry", help="schema registry URL: the Kafka event log's values in the "
                                                  "Confluent wire format (default: schemaless Avro)")
    parser.add_argument("--candidates", type=int, default=100,
                        help="the most popular items /recommendations ranks (default: %(default)s)")
    parser.add_argument("--candidates_refresh_s", type=float, default=5.0,
                        help="seconds between recomputations of the popular items (default: %(default)s)")
    parser.add_argument("--epsilon", type=float, default=0.05,
                        help="exploration: the share of recommended slots drawn at random among the "
                             "candidates (default: %(default)s)")
    parser.add_argument("--cache_s", type=float, default=1.0,
                        help="seconds a user's ranking is reused; 0 never (default: %(default)s)")
    parser.add_argument("--api_token_file", help="a file holding the token that POST /events needs "
                                                 "(default: $STREAMML_API_TOKEN; unset: no token needed)")
    parser.add_argument("--seed", type=int, help="seed of the exploration's draws (default: from the system)")
    parser.add_argument("--kafka_requests", metavar="kafka://HOST:PORT/PREFIX",
                        help="also answer /predict requests from the topic PREFIX.requests on PREFIX.replies "
                             "(or the topic a request's reply_to header names; default: off)")
    parser.add_argument("--batch_store", metavar="LOCATION",
                        help="the batch job's top lists (python -m pipelines.batch_serve: a SQLite file or "
                             "postgresql:// URL), answered with /recommendations?source=batch (default: none)")
    parser.add_argument("--batch_first", action="store_true",
                        help="answer /recommendations from --batch_store whenever it holds the user's list "
                             "(a lookup instead of a ranking); others are ranked live")
    parser.add_argument("--experiment", metavar="FILE", type=config.path_argument,
                        help="an experiment (JSON or YAML, experiments.config) whose variants serve the live "
                             "rankings and predictions; reloaded when the file changes (default: none)")
    parser.add_argument("--experiment_store", metavar="LOCATION",
                        help="the experiments' routing state, written by their owner: a SQLite file or "
                             "postgresql:// URL (default: the registry's database)")
    parser.add_argument("--alerts", default=f"{DEFAULT_OUTPUT}/alerts.jsonl", metavar="LOCATION",
                        help="the learning plane's alerts that /dashboard marks: a guarded job's alerts.jsonl (read "
                             "as it grows; it need not exist yet) or kafka://HOST:PORT/PREFIX.alerts "
                             "(default: %(default)s, the main job's)")
    parser.add_argument("--consumer_lag", metavar="kafka://HOST:PORT/TOPIC",
                        help="the streaming learner's input topic: its consumer group's lag is on /dashboard and "
                             "/metrics (default: none)")
    parser.add_argument("--consumer_group", default="streamml-recommend",
                        help="the learner's consumer group, for --consumer_lag (default: %(default)s, the main job's)")
    parser.add_argument("--workers", type=int, default=1,
                        help="server processes sharing the port, e.g. one per core (default: %(default)s)")
    args = parser.parse_args(argv)
    for flag in ("registry", "online_store"):
        if "://" not in getattr(args, flag) and not os.path.isfile(getattr(args, flag)):
            parser.error(f"no file --{flag} {getattr(args, flag)}: the learning plane publishes it "
                         "(python -m pipelines.recommend writes out/recommend/registry.sqlite and online.sqlite)")
    if args.batch_first and not args.batch_store:
        parser.error("--batch_first needs --batch_store")
    if args.batch_store and "://" not in args.batch_store:
        if not os.path.isfile(args.batch_store):
            parser.error(f"no file --batch_store {args.batch_store}: python -m pipelines.batch_serve writes it")
        args.batch_store = os.path.abspath(args.batch_store)
    for flag in ("poll_s", "candidates", "candidates_refresh_s", "workers"):
        if getattr(args, flag) <= 0:
            parser.error(f"--{flag} must be > 0")
    if not 0 <= args.epsilon <= 1:
        parser.error("--epsilon must be in [0, 1]")
    if args.cache_s < 0:
        parser.error("--cache_s must be >= 0")
    if args.experiment_store and "://" not in args.experiment_store:
        args.experiment_store = os.path.abspath(args.experiment_store)
    token = os.environ.get("STREAMML_API_TOKEN") or None
    if args.api_token_file:
        with open(args.api_token_file) as f:
            token = f.read().strip()
        if not token:
            parser.error(f"--api_token_file {args.api_token_file} is empty")
    event_log = args.event_log if args.event_log.startswith("kafka://") else os.path.abspath(args.event_log)
    try:
        check_location(event_log)
        if args.kafka_requests:
            parse_requests_location(args.kafka_requests)
        if args.consumer_lag:
            parse_location(args.consumer_lag, "--consumer_lag")
        if args.alerts.startswith("kafka://"):
            parse_location(args.alerts, "--alerts")
    except ValueError as e:
        parser.error(str(e))
    registry, online_store = (where if "://" in where else os.path.abspath(where)
                              for where in (args.registry, args.online_store))
    try:  # a server that is away, a URL or a key that is wrong: said in one line, before serving
        open_registry(registry).close()
        open_online_store(online_store).close()
        serde.KeySource(file=args.key_file, store=registry).resolve()
    except (ValueError, ConnectionError, OSError) as e:
        parser.error(str(e))
    return args, Settings(registry, online_store, event_log,
                          model=args.model, key_file=args.key_file, poll_s=args.poll_s,
                          schema_registry=args.schema_registry, candidates=args.candidates,
                          candidates_refresh_s=args.candidates_refresh_s, epsilon=args.epsilon,
                          cache_s=args.cache_s, api_token=token, seed=args.seed,
                          kafka_requests=args.kafka_requests, batch_store=args.batch_store,
                          batch_first=args.batch_first, experiment=args.experiment,
                          experiment_store=args.experiment_store, consumer_lag=args.consumer_lag,
                          consumer_group=args.consumer_group,
                          alerts=args.alerts if args.alerts.startswith("kafka://") else os.path.abspath(args.alerts))


def main(argv=None) -> int:
    args, settings = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    print(f"serving {settings.model} from {settings.registry} at http://{args.host}:{args.port} "
          f"(API schema: /openapi.json; dashboard: /dashboard; Ctrl-C stops)", file=sys.stderr, flush=True)
    # Idle connections kept longer than clients keep theirs: a server closing one as a client
    # reuses it resets that request. Open dashboards (streams that never end) are cut
    # GRACE_S after a stop is asked for. No access log: /metrics counts the requests, and
    # uvicorn formats each request's line even when its level drops it.
    if args.workers == 1:
        uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level="warning", timeout_keep_alive=75,
                    timeout_graceful_shutdown=GRACE_S, access_log=False)
    else:  # processes sharing the port, each its own app over the same stores (they keep no state)
        settings_to_environment(settings)
        uvicorn.run("serving.app:from_environment", factory=True, workers=args.workers, host=args.host,
                    port=args.port, log_level="warning", timeout_keep_alive=75, timeout_graceful_shutdown=GRACE_S,
                    access_log=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
