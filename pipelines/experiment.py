"""`python -m pipelines.experiment`: the one owner of an experiment's routing state.

    python -m pipelines.experiment --experiment ranker.json --topic live.interactions \\
        --store out/recommend/registry.sqlite --report out/experiment

It reads the interactions topic the serving replicas log to (from its start: the ledger is
rebuilt on every start), counts each routed request's error and time to answer as it arrives,
labels each routed impression once its attribution window has closed in event time
(`experiments.labels`), and every `--check_s` checks the experiment (`experiments.owner`),
writes the new routing state and its events to the experiments store (which the replicas
read), and rewrites the report (`--report`: report.md, report.png,
history.jsonl). A second owner of the same experiment is refused by the store. A finished
canary is promoted in the registry (`--registry`). The file is reloaded when it changes, as
the servers reload it: new weights, plan, ramp or guardrails apply from the next check. A
change of kind, control or variants is a new experiment (give it a new name): it is refused,
logged, and the file before it goes on. Ctrl-C or SIGTERM checks a last time and writes the
report.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time

from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from core.kafka import KafkaRecord, consumer, ensure_topic
from core.payloads import AvroPayloads
from experiments import config, report
from experiments.canary import PROMOTED
from experiments.labels import Labeller
from experiments.owner import Ledger, Owner
from stores.experiments import Conflict, open_experiment_store
from stores.registry import open_registry

LOG = logging.getLogger(__name__)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pipelines.experiment", description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiment", required=True, type=config.path_argument, help="the experiment file (JSON or YAML, experiments.config)")
    parser.add_argument("--bootstrap", default="127.0.0.1:19092", help="Kafka bootstrap servers")
    parser.add_argument("--topic", default="interactions", help="the interactions topic the servers log to")
    parser.add_argument("--store", required=True, help="the experiments store the servers read (their "
                                                        "--experiment_store, by default their --registry)")
    parser.add_argument("--registry", help="where a finished canary's model is promoted (default: none)")
    parser.add_argument("--report", default="out/experiment", help="the report's folder (default: %(default)s)")
    parser.add_argument("--attribution_minutes", type=float, default=30.0)
    parser.add_argument("--allowed_lateness_s", type=float, default=60.0,
                        help="how late an outcome may come and still count (default: %(default)s)")
    parser.add_argument("--check_s", type=float, default=5.0, help="seconds between checks (default: %(default)s)")
    parser.add_argument("--duration_s", type=float, help="stop after this long (default: run until stopped)")
    args = parser.parse_args(argv)
    if args.check_s <= 0 or args.attribution_minutes <= 0 or args.allowed_lateness_s < 0:
        parser.error("--check_s and --attribution_minutes must be > 0, --allowed_lateness_s >= 0")
    return args


def run(args: argparse.Namespace, stop: threading.Event) -> dict:
    experiment = config.load(args.experiment)
    store = open_experiment_store(args.store)
    stored = store.get(experiment.name)
    version, state = (stored.version, stored.state) if stored else (0, {})
    owner, ledger = Owner(experiment, state), Ledger()
    source = consumer(args.bootstrap, f"experiment-{experiment.name}")
    topics = [args.topic] + ([f"{args.topic}.shadow"] if experiment.kind == "shadow" else [])
    if experiment.kind == "shadow":
        ensure_topic(args.bootstrap, topics[1], partitions=1)
    found = source.list_topics(timeout=10).topics
    source.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t in topics for p in found[t].partitions])
    labeller = Labeller(int(args.attribution_minutes * 60_000), int(args.allowed_lateness_s * 1000), experiment.name,
                        sorted(found[args.topic].partitions))
    reader = _Reader(args.topic, labeller, ledger, experiment)
    history, events, checked = [], [e for _, _, e in store.events(experiment.name)], 0.0
    watched = _Watched(args.experiment)
    deadline = time.monotonic() + args.duration_s if args.duration_s else None
    try:
        while True:
            reader.take(source.consume(1000, timeout=0.2))
            done = stop.is_set() or (deadline is not None and time.monotonic() >= deadline)
            if done or time.monotonic() - checked >= args.check_s:
                checked = time.monotonic()
                changed = watched.changed(experiment)
                if changed is not None:
                    experiment, owner = changed, _reloaded(owner, changed)
                    reader.experiment = experiment
                state, new_events = owner.check(ledger)
                state["input"] = dict(reader.counts)
                version = store.put(experiment.name, state, expected_version=version)
                for event in new_events:
                    store.add_event(experiment.name, event)
                    if event["event"] == PROMOTED and args.registry:
                        _promote(args.registry, experiment)
                events += new_events
                history.append({"at_ms": int(time.time() * 1000), "event_time_ms": labeller.newest_ms,
                                **{k: state.get(k) for k in ("summary", "test", "weight", "probabilities")}})
                report.write(args.report, experiment, history, events, state)
            if done:
                return {"state": state, "events": events, "input": dict(reader.counts), "version": version}
    finally:
        source.close()
        store.close()


class _Reader:
    """Interactions into labels into the ledger, with the shadow's predictions of each. Counts
    what it read, what it could not decode (the learning plane dead-letters those) and the
    impressions routed by this experiment that it cannot use: a variant the file does not name,
    or no bucket (a foreign or broken writer). Those are skipped, counted, and in the report."""

    def __init__(self, topic: str, labeller: Labeller, ledger: Ledger, experiment: config.Experiment):
        self.topic, self.labeller, self.ledger, self.experiment = topic, labeller, ledger, experiment
        self.interactions = AvroPayloads("interaction")
        self.predictions = AvroPayloads("shadow_prediction", id_field="impression_id")
        self.shadow: dict[str, dict] = {}  # impression id -> the shadow's prediction, until labelled
        self.counts = {"read": 0, "undecodable": 0, "unusable": 0}

    def take(self, messages) -> None:
        labelled = [] if messages else self.labeller.advance()  # idle partitions let go
        for message in messages:
            if message.error() is not None:
                continue
            self.counts["read"] += 1
            interaction = message.topic() == self.topic
            try:
                row = (self.interactions if interaction else self.predictions).row(KafkaRecord(
                    message.topic(), message.partition(), message.offset(), message.key(), message.value(),
                    message.timestamp()[1]))
            except ValueError:
                self.counts["undecodable"] += 1
                continue
            if interaction and self._unusable(row.fields):
                self.counts["unusable"] += 1
            elif interaction:
                if row.fields["event_type"] == "impression" and row.fields.get("experiment") == self.experiment.name:
                    self.ledger.served(row.fields)
                labelled += self.labeller.add(row.fields, message.partition())
            else:
                self.shadow[row.fields["impression_id"]] = row.fields
        for impression in labelled:
            self.ledger.add(impression, self.shadow.pop(impression["event_id"], None))

    def _unusable(self, fields: dict) -> bool:
        return (fields["event_type"] == "impression" and fields.get("experiment") == self.experiment.name
                and (fields.get("variant") not in self.experiment.variants or fields.get("bucket") is None))


class _Watched(config.Watched):
    """The experiment file: a changed one that loads and is the same experiment, or None
    (unchanged, or refused and logged)."""

    def changed(self, current: config.Experiment) -> config.Experiment | None:
        try:
            new = super().changed()
        except (OSError, config.ConfigError) as e:
            LOG.error("the experiment file changed and is refused; the one before goes on: %s", e)
            return None
        if new is None:
            return None
        same = ("name", "kind", "control", "variants")
        if any(getattr(new, k) != getattr(current, k) for k in same):
            LOG.error("the experiment file changed its %s: that is a new experiment (give it a new name); "
                      "refused, the one before goes on", ", ".join(same))
            return None
        LOG.info("experiment %s reloaded from %s", new.name, self.path)
        return new


def _reloaded(owner: Owner, experiment: config.Experiment) -> Owner:
    """An owner of the changed experiment from the routing state so far. An A/B test keeps its
    plan unless the plan changed: its mixing variance must not follow the data."""
    new = Owner(experiment, owner.state)
    if experiment.plan == owner.experiment.plan and experiment.weights == owner.experiment.weights:
        new._ab = owner._ab
    return new


def _promote(location: str, experiment: config.Experiment) -> None:
    """The canary's newest version becomes production in the registry."""
    registry = open_registry(location)
    try:
        newest = registry.latest(experiment.variants[experiment.treatment()].model)
        if newest is not None:
            registry.promote(newest.model_key, newest.version, "production")
    finally:
        registry.close()


def main(argv=None) -> int:
    args = parse_args(argv)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    experiment = config.load(args.experiment)
    print(f"owning experiment {experiment.name} ({experiment.kind}) from topic {args.topic}; "
          f"state in {args.store}, report in {args.report}/report.md", file=sys.stderr, flush=True)
    try:
        result = run(args, stop)
    except Conflict as e:
        print(f"error: {e}: is another owner running?", file=sys.stderr)
        return 1
    counts = result["input"]
    print(f"stopped: {len(result['events'])} events, state version {result['version']}; read {counts['read']:,} "
          f"records ({counts['undecodable']:,} undecodable, {counts['unusable']:,} routed impressions unusable: "
          "an unknown variant or no bucket)", file=sys.stderr)
    if not counts["read"]:
        print(f"error: read nothing from topic {args.topic!r} at {args.bootstrap}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
