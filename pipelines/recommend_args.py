"""The recommendation job's command line: its flags, their defaults and the checks between them
(Beam's own flags pass through to the runner)."""
from __future__ import annotations

import inspect
import os

from core import warmstart
from core.decoding import event_time_arg
from core.kafka import topics as kafka_topics
from core.payloads import AvroPayloads, RegistryPayloads
from experiments import config
from models import factory, serde
from monitoring.guard import Guard
from pipelines.console import ArgumentParser, UserError, add_verbose_flag
from pipelines.options import has_flag
from simulator.stream import ATTACK_KINDS, SimulatorConfig
from stores.online import open_online_store
from stores.registry import STAGES, open_registry

WARM_KEY = "recommender"  # the model key --warm_start loads (the main model's, pipelines.recommend.MAIN)


def parse_args(argv=None):
    parser = ArgumentParser(
        prog="python -m pipelines.recommend",
        description="The content-recommendation job: predict clicks online from a stream of interactions.",
        epilog="Any other flag goes to Beam (e.g. --runner, --streaming).")
    parser.add_argument("--output", default="out/recommend", help="Output folder (default: %(default)s).")
    parser.add_argument("--events", help="Interactions as an Avro file; default: simulate them.")
    parser.add_argument("--impressions", type=int, default=20_000,
                        help="Impressions to simulate when --events is not given (default: %(default)s).")
    parser.add_argument("--users", type=int, default=200,
                        help="Users to simulate (default: %(default)s: enough history per user for "
                             "user features to matter within a few hours of events).")
    parser.add_argument("--seed", type=int, default=7, help="Simulator seed (default: %(default)s).")
    parser.add_argument("--model", default="models.zoo:recommender",
                        help="MODULE:FUNCTION[?ARG=VALUE&...] returning a river binary classifier "
                             "(default: %(default)s).")
    parser.add_argument("--hash_size", type=int, default=2 ** 16,
                        help="Hash buckets for ids and other categoricals, for a --model that takes "
                             "hash_size (default: %(default)s).")
    parser.add_argument("--experiment", metavar="FILE", type=config.argument,
                        help="An experiment (experiments.config): its variants with a factory are learned too, "
                             "and each variant learns only from the impressions it served (a shadow's from "
                             "all); a new variant joins by restarting the job with the new file.")
    parser.add_argument("--no_baselines", dest="baselines", action="store_false",
                        help="Do not also learn the baselines (the model without entity features, "
                             "item popularity) for comparison.")
    parser.add_argument("--attribution_minutes", type=float, default=30.0,
                        help="An outcome counts for its impression within this time (default: %(default)s).")
    parser.add_argument("--metrics_minutes", type=float, default=10.0,
                        help="Windowed-metrics window, minutes of event time (default: %(default)s).")
    parser.add_argument("--output_format", choices=("jsonl", "avro"), default="jsonl")
    parser.add_argument("--registry", metavar="LOCATION",
                        help="Model registry to publish signed model versions to, for the serving plane: a "
                             "SQLite file or postgresql://USER@HOST:PORT/DB (default: OUTPUT/registry.sqlite, "
                             "signed with $STREAMML_STATE_KEY or else the key file beside it; 'none': off).")
    parser.add_argument("--online_store", metavar="LOCATION",
                        help="Online store to publish each user's and item's latest profile to, for the "
                             "serving plane: a SQLite file or redis://HOST:PORT/DB (default: "
                             "OUTPUT/online.sqlite; 'none': off).")
    parser.add_argument("--warm_start", metavar="VERSION",
                        help="Start the main model from this registered version of 'recommender' (a number, "
                             "'latest', or a stage: candidate, production) in --warm_from, and keep learning "
                             "(default: from nothing). The baselines start from nothing.")
    parser.add_argument("--warm_from", metavar="LOCATION",
                        help="The registry --warm_start loads from (default: --registry).")
    parser.add_argument("--publish_every_s", type=float, default=1.0,
                        help="While streaming, publish each model at least this often (seconds) as it "
                             "learns, and whenever it has caught up; a batch run publishes the final "
                             "models (default: %(default)s).")
    _add_guard_flags(parser)
    kafka = parser.add_argument_group("Kafka (a broker: bash scripts/kafka.sh start)")
    kafka.add_argument("--source", choices=("file", "kafka"), default="file",
                       help="Read interactions from --events / the simulator, or from Kafka.")
    kafka.add_argument("--bootstrap", default="127.0.0.1:19092", help="Kafka bootstrap servers.")
    kafka.add_argument("--topic", default="interactions", help="Topic of interactions (Avro).")
    kafka.add_argument("--group", default="streamml-recommend", help="Consumer group.")
    kafka.add_argument("--start_time", type=event_time_arg,
                       help="Where a group without committed offsets starts: the first records stamped at "
                            "or after this (epoch ms or ISO-8601; e.g. a backfill's cut-off); default: "
                            "the earliest.")
    kafka.add_argument("--allowed_lateness_s", type=float, default=60.0,
                       help="How far (seconds of event time) a record may come behind the latest one read "
                            "before it on its partition and still be used, exactly as if on time; one later "
                            "than that is a 'late' dead letter. The learning plane runs this far behind the "
                            "stream (default: %(default)s).")
    kafka.add_argument("--max_clock_skew_s", type=float, default=3600.0,
                       help="How far (seconds) a record's event time may be ahead of its Kafka timestamp "
                            "(when it was sent); one further ahead is a 'future' dead letter, so that it "
                            "cannot make its partition's later records late (default: %(default)s).")
    kafka.add_argument("--stop_at_end", action="store_true",
                       help="Stop at the topic's end offsets at start-up (replay), instead of running on.")
    kafka.add_argument("--kafka_out", metavar="PREFIX",
                       help="Also write to topics PREFIX.predictions, PREFIX.metrics, PREFIX.dead_letters, "
                            "and commit the group's offsets once results are delivered there.")
    kafka.add_argument("--schema_registry", metavar="URL",
                       help="Read and write the Confluent wire format against this schema registry "
                            "(its Confluent API, e.g. http://127.0.0.1:18082/apis/ccompat/v7; "
                            "bash scripts/schema_registry.sh start). Default: schemaless Avro.")
    kafka.add_argument("--learner_store", metavar="SQLITE",
                       help="Durable model snapshots, so a restarted job resumes without relearning "
                            "(default with --source kafka: OUTPUT/learner-GROUP.sqlite, unless the runner "
                            "checkpoints (--checkpointing_interval on Flink); 'none': off).")
    kafka.add_argument("--feature_store", metavar="SQLITE",
                       help="Durable entity profiles, served features and labels, likewise, or the snapshot "
                            "of a backfill (pipelines.backfill) to start from; read by the streaming "
                            "feature stage (default with --source kafka: OUTPUT/features-GROUP.sqlite, unless "
                            "the runner checkpoints; 'none': off).")
    add_verbose_flag(parser)
    args, beam_args = parser.parse_job_args(argv)
    if args.events and not os.path.isfile(args.events):
        parser.error(f"no such file: --events {args.events}")
    if args.hash_size < 1:
        parser.error("--hash_size must be >= 1")
    try:
        if "?" not in args.model and "hash_size" in inspect.signature(factory.load(args.model)).parameters:
            args.model = f"{args.model}?hash_size={args.hash_size}"
        if factory.task_of(factory.build(args.model)) != "binary":
            parser.error(f"--model {args.model} must build a binary classifier (click or not)")
    except (ValueError, TypeError) as e:
        parser.error(f"--model: {e}")
    for flag in ("allowed_lateness_s", "max_clock_skew_s"):
        if getattr(args, flag) < 0:
            parser.error(f"--{flag} cannot be negative")
    if args.source == "file" and args.start_time is not None:
        parser.error("--start_time is for --source kafka")
    if args.source == "kafka" and args.events:
        parser.error("--events is for --source file")
    if args.source == "kafka" and not (args.stop_at_end or args.kafka_out):
        parser.error("an endless Kafka stream writes no files: give --kafka_out PREFIX (or --stop_at_end)")
    # A runner that checkpoints (Flink's --checkpointing_interval) restores the job's state
    # itself after a failure; a store would run ahead of the restored state, and the events
    # replayed from the checkpoint's offsets would meet a model that already learned them.
    checkpointed = has_flag(beam_args, "--checkpointing_interval")
    for name in ("learner", "feature"):
        store = getattr(args, f"{name}_store")
        if checkpointed and store not in (None, "none"):
            parser.error(f"--{name}_store with --checkpointing_interval: the runner's checkpoints hold the "
                         "job's state, and a store would run ahead of a restored checkpoint")
        if store is None and args.source == "kafka" and not checkpointed:
            store = f"{args.output.rstrip('/')}/{name}{'s' if name == 'feature' else ''}-{args.group}.sqlite"
        # Absolute: workers in another process (Flink's worker pool) open the same file.
        setattr(args, f"{name}_store", None if store in (None, "none") else os.path.abspath(store))
    if args.publish_every_s < 0:
        parser.error("--publish_every_s cannot be negative")
    for name, default in (("registry", "registry.sqlite"), ("online_store", "online.sqlite")):
        where = getattr(args, name) or f"{args.output.rstrip('/')}/{default}"
        if "://" in where:  # a server: a mistake in its URL, or a server that is away, is said now
            try:
                (open_registry if name == "registry" else open_online_store)(where).close()
            except (ValueError, ConnectionError) as e:
                parser.error(f"--{name} {where}: {e}")
        setattr(args, name, None if where == "none" else where if "://" in where else os.path.abspath(where))
    args.warm_spec = None
    if args.warm_start:
        try:
            args.warm_spec = _warm_start(args)
        except (LookupError, ValueError, serde.TamperedState) as e:
            parser.error(f"--warm_start {args.warm_start}: {e}")
    elif args.warm_from:
        parser.error("--warm_from is for --warm_start")
    try:
        args.guard = _guard(args)
        args.attack = _attack(args)
    except ValueError as e:
        parser.error(str(e))
    if args.attack and (args.events or args.source != "file"):
        parser.error("--attack_users is for the simulated stream (no --events, --source file)")
    if args.source == "file" and args.feature_store and "--streaming" not in beam_args:
        parser.error("--feature_store is read by the streaming feature stage: add --streaming")
    return args, beam_args


def _add_guard_flags(parser) -> None:
    defaults = Guard()
    guard = parser.add_argument_group("Guard of the main model (monitoring.guard): budgets, quarantine, rollback")
    guard.add_argument("--guard", action="store_true",
                       help="Guard the main model: pin known-good versions, quarantine users whose labels "
                            "are far from its predictions (their labels go to the dead letters, not "
                            "learned) and roll back to the last known-good version when one had reached it.")
    guard.add_argument("--learning_budget", type=float, metavar="PER_HOUR",
                       help="With --guard: each user's labels learned per hour of event time, at most "
                            "(default: no budget).")
    guard.add_argument("--guard_pin_every", type=int, default=defaults.pin_every, metavar="LABELS",
                       help="With --guard: labels between two known-good candidates, and a candidate's "
                            "probation (default: %(default)s).")
    guard.add_argument("--guard_threshold", type=float, default=defaults.threshold,
                       help="With --guard: a user's suspicion score (a CUSUM) that quarantines it "
                            "(default: %(default)s).")
    parser.add_argument("--taste_alarm", choices=("off", "reset"), default="off",
                        help="reset: watch the users' clicks for a taste drift (monitoring.taste) and, on an "
                             "alarm, restart every user's genre profile from its last 15 minutes; the alarm "
                             "is an alert (default: %(default)s).")
    attack = parser.add_argument_group("A simulated poisoning attack (simulator.SimulatorConfig)")
    attack.add_argument("--attack_users", type=float, default=0.0, metavar="FRACTION",
                        help="Users that attack (default: none).")
    attack.add_argument("--attack_at", type=float, default=0.5, metavar="FRACTION",
                        help="Share of the impressions before the attack starts (default: %(default)s).")
    attack.add_argument("--attack_kind", choices=ATTACK_KINDS, default="flip")
    attack.add_argument("--attack_rate", type=float, default=1.0, metavar="FRACTION",
                        help="Share of an attacker's impressions answered falsely (default: %(default)s).")


def _guard(args) -> Guard | None:
    if not args.guard:
        for flag in ("learning_budget",):
            if getattr(args, flag) is not None:
                raise ValueError(f"--{flag} is for --guard")
        return None
    return Guard(pin_every=args.guard_pin_every, probation=args.guard_pin_every, threshold=args.guard_threshold,
                 budget_per_hour=args.learning_budget)


def _attack(args) -> dict:
    """The simulator's attack settings, {} for none (checked by SimulatorConfig)."""
    if not args.attack_users:
        return {}
    attack = {"attack_users": args.attack_users, "attack_at": args.attack_at, "attack_kind": args.attack_kind,
              "attack_rate": args.attack_rate}
    SimulatorConfig(**attack)
    return attack


def _warm_start(args) -> str:
    """The model spec of the version --warm_start names, checked (signature, task) now."""
    where = args.warm_from or args.registry
    if where is None:
        raise ValueError("no registry to load it from: give --warm_from (or --registry)")
    where = where if "://" in where else os.path.abspath(where)
    registry = open_registry(where)
    try:
        if args.warm_start.isdigit():
            version = registry.get(WARM_KEY, int(args.warm_start))
        elif args.warm_start == "latest" or args.warm_start in STAGES:
            version = registry.latest(WARM_KEY, None if args.warm_start == "latest" else args.warm_start)
            if version is None:
                raise LookupError(f"no {args.warm_start} version of {WARM_KEY!r} in {where}")
        else:
            raise ValueError(f"expected a version number, latest, or a stage ({', '.join(STAGES)})")
    finally:
        registry.close()
    spec = warmstart.spec(where, WARM_KEY, version.version)
    if factory.task_of(factory.build(spec)) != "binary":
        raise ValueError(f"version {version.version} of {WARM_KEY!r} is not a binary classifier")
    return spec


def payloads(args):
    """How Kafka values decode: the Confluent wire format with --schema_registry, else schemaless Avro."""
    if args.schema_registry:
        return RegistryPayloads(args.schema_registry, "interaction")
    return AvroPayloads("interaction")


def check_kafka(args):
    """A clear error before anything starts, when the broker is away or the topic is missing."""
    try:
        found = kafka_topics(args.bootstrap)
    except ConnectionError as e:
        raise UserError(f"{e}: is it running? (bash scripts/kafka.sh start)") from e
    if args.source == "kafka" and args.topic not in found:
        raise UserError(f"no topic {args.topic!r} at {args.bootstrap} (topics: {', '.join(sorted(found)) or 'none'})")
