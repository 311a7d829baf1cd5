"""The simulator's command line: `python -m simulator --output FILE.avro | --kafka BOOTSTRAP`
(`--help` for the rest)."""
from __future__ import annotations

import argparse
import collections
import datetime

from core.decoding import event_time_arg
from simulator import stream
from simulator.stream import (ATTACK_KINDS, EVENT_TYPES, START_MS,  # noqa: F401  (START_MS: doctest)
                              SimulatorConfig, generate_with_truth, write_avro)


def parse_args(argv=None) -> argparse.Namespace:
    defaults = SimulatorConfig()
    parser = argparse.ArgumentParser(prog="python -m simulator",
                                     description=stream.__doc__.split("\n\n")[0])
    parser.add_argument("--output", help="Avro file to write.")
    parser.add_argument("--kafka", metavar="BOOTSTRAP",
                        help="Produce to Kafka at these bootstrap servers instead of a file.")
    parser.add_argument("--topic", default="interactions",
                        help="Kafka topic with --kafka (default interactions)")
    parser.add_argument("--partitions", type=int, default=3,
                        help="partitions of a topic that --kafka creates (default 3)")
    parser.add_argument("--schema_registry", "--schema-registry", metavar="URL",
                        help="with --kafka: write the Confluent wire format, the schema registered in "
                             "this registry (its Confluent API, e.g. "
                             "http://127.0.0.1:18082/apis/ccompat/v7; default: schemaless Avro)")
    parser.add_argument("--rate", type=float,
                        help="records/s with --kafka (default: as fast as possible)")
    parser.add_argument("--impressions", type=int, default=defaults.impressions,
                        help=f"number of impressions (default {defaults.impressions})")
    parser.add_argument("--users", type=int, default=defaults.users,
                        help=f"number of users (default {defaults.users})")
    parser.add_argument("--items", type=int, default=defaults.items,
                        help=f"number of items (default {defaults.items})")
    parser.add_argument("--seed", type=int, default=defaults.seed,
                        help=f"random seed (default {defaults.seed})")
    parser.add_argument("--stream-seed", type=int,
                        help="seed of the visits alone, so that one world (--seed: users, tastes, items) "
                             "gives other streams, e.g. a history before a run (default: --seed)")
    parser.add_argument("--start", type=event_time_arg, default=defaults.start_ms,
                        help="event time of the first impression: epoch ms or ISO-8601 "
                             "(default 2026-01-01T00:00:00Z)")
    parser.add_argument("--late-fraction", type=float, default=defaults.late_fraction,
                        help=f"fraction of outcomes that arrive late "
                             f"(default {defaults.late_fraction})")
    parser.add_argument("--malformed-fraction", type=float,
                        default=defaults.malformed_fraction,
                        help=f"fraction of records that are malformed "
                             f"(default {defaults.malformed_fraction})")
    parser.add_argument("--drift-at", type=float, default=defaults.drift_at,
                        help=f"fraction of the stream at which tastes drift "
                             f"(default {defaults.drift_at})")
    parser.add_argument("--mean-gap-ms", type=float, default=defaults.mean_gap_ms,
                        help=f"mean time between impressions in ms "
                             f"(default {defaults.mean_gap_ms:g})")
    parser.add_argument("--attack-users", type=float, default=0.0, metavar="FRACTION",
                        help="users that poison the stream from --attack-at on (default: none)")
    parser.add_argument("--attack-at", type=float, default=defaults.attack_at, metavar="FRACTION",
                        help=f"share of the impressions before the attack (default {defaults.attack_at})")
    parser.add_argument("--attack-kind", choices=ATTACK_KINDS, default=defaults.attack_kind,
                        help="flip: click what they would not and ignore what they would; fake_clicks: "
                             "click (default flip)")
    parser.add_argument("--attack-rate", type=float, default=defaults.attack_rate, metavar="FRACTION",
                        help=f"share of an attacker's impressions answered falsely (default {defaults.attack_rate})")
    parser.add_argument("--codec", choices=("deflate", "null"), default="deflate",
                        help="Avro block codec (default deflate)")
    args = parser.parse_args(argv)
    if (args.output is None) == (args.kafka is None):
        parser.error("give exactly one of --output FILE and --kafka BOOTSTRAP")
    if args.schema_registry and not args.kafka:
        parser.error("--schema_registry is for --kafka")
    try:
        args.config = SimulatorConfig(
            seed=args.seed, stream_seed=args.stream_seed, start_ms=args.start, users=args.users, items=args.items, impressions=args.impressions,
            late_fraction=args.late_fraction, malformed_fraction=args.malformed_fraction,
            drift_at=args.drift_at, mean_gap_ms=args.mean_gap_ms, attack_users=args.attack_users,
            attack_at=args.attack_at, attack_kind=args.attack_kind, attack_rate=args.attack_rate)
    except ValueError as e:
        parser.error(str(e))
    return args


def run(argv=None) -> str:
    """Writes the stream the flags describe; prints and returns a one-line summary."""
    args = parse_args(argv)
    stats = _Stats()
    records = stats.observe(generate_with_truth(args.config))
    if args.kafka:
        from core import kafka

        kafka.ensure_topic(args.kafka, args.topic, args.partitions)
        count = kafka.produce(records, args.kafka, args.topic, "interaction", "user_id", rate=args.rate,
                              registry=args.schema_registry)
        target = f"Kafka topic {args.topic!r}"
    else:
        count = write_avro(records, args.output, codec=args.codec)
        target = args.output
    line = f"wrote {count} records to {target}: {stats.summary()}"
    print(line)
    return line


class _Stats:
    """Counts what passes through: records by type, malformed, late, and the time span."""

    def __init__(self):
        self.by_type = collections.Counter()
        self.malformed = self.late = self.poisoned = 0
        self.first = self.last = None

    def observe(self, labelled):
        for record, truth in labelled:
            self.by_type[record["event_type"]] += 1
            self.malformed += truth.malformed is not None
            self.late += truth.late
            self.poisoned += truth.poisoned
            if truth.malformed is None:
                t = record["event_time"]
                self.first = t if self.first is None else min(self.first, t)
                self.last = t if self.last is None else max(self.last, t)
            yield record

    def summary(self) -> str:
        types = " ".join(f"{t}={self.by_type[t]}" for t in EVENT_TYPES)
        impressions = self.by_type["impression"]
        ctr = self.by_type["click"] / impressions if impressions else 0.0
        span = "empty"
        if self.first is not None:
            hours = (self.last - self.first) / 3_600_000
            span = f"{_iso(self.first)} .. {_iso(self.last)} ({hours:.2f} h)"
        return (f"{types} (click rate {ctr:.3f}); malformed={self.malformed} "
                f"late={self.late}{f' poisoned={self.poisoned}' if self.poisoned else ''}; event time {span}")


def _iso(ms: int) -> str:
    """Epoch milliseconds as ISO-8601 UTC text.

    >>> _iso(START_MS)
    '2026-01-01T00:00:00Z'
    """
    when = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")
