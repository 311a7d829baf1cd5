"""The main job's work as one plain Python loop over Kafka, without Beam: the `floor` rows of
`benchmarks.kafka_latency`, the most the `full` rows can reach with this work on this machine.

    python -m benchmarks.stream_floor --topic IN --out OUT.predictions [--window_s 10]

One process, one loop: consume the interactions (confluent-kafka, every partition of the topic),
decode them (`core.payloads`), drop the late and the invalid (`core.interactions`), give each
impression its user and item features (`core.features`), label it when its attribution window
closes (`transforms.recsys.attribution`, as `LabelImpressions` does), predict with the three
models on serving and learn on the label (`core.learning.Learner`, the models and examples of
`pipelines.recommend`), and when a model has learned a label, produce the prediction it served,
scored with that label, as the job does (`transforms.evaluation.delayed_labels`). It reuses
those functions (two live in modules that import Beam; no pipeline is built, no runner runs),
so it computes what the job computes: `tests/test_stream_floor.py` checks that its predictions
equal the batch job's, record for record.

Event time drives it as the watermark drives the job. Records wait in a heap; the watermark is
the oldest "latest event time read" over the topic's partitions, and every instant before it is
applied in (event time, event id) order: the labels whose window closes then, then the
instant's records (validated, featurised, labelled, served), then the models learn and predict
what the instant brought. A record behind its partition's latest event time is late and
dropped, as the job's source drops it with the allowed lateness 0 of `benchmarks.full_job`;
unlike there, a partition holds the watermark until it has given a record (the benchmark
fills all of them).

Not done here, and done by the job: durable stores (its learner and feature snapshots in SQLite,
on in `benchmarks.full_job`), offset commits, windowed metrics, dead letters and metrics to Kafka.

`measure_floor` measures it as `benchmarks.full_job.measure_full` measures the job: the same
simulated records, rates, window, producer (`produce_stamped`) and reader (`read_predictions`), and
the same definitions of the row's numbers (`benchmarks.full_job.full_row`).
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import heapq
import itertools
import os
import select
import signal
import subprocess
import sys
import threading
import uuid

from confluent_kafka import OFFSET_BEGINNING, KafkaException, Producer, TopicPartition

import simulator
from benchmarks.full_job import PARTITIONS, WINDOW_S, full_row, produce_stamped, read_predictions, wait_for
from core.features import PROFILES, featurise
from core.interactions import invalid_reason, served_example
from core.kafka import KafkaRecord, consumer, encode, ensure_topic, is_transient
from core.learning import DEAD_LETTER, Learner
from core.payloads import AvroPayloads
from models import serde
from pipelines.recommend import MAIN, _for_models, _models
from transforms.recsys.attribution import JOINED, Attribution, impression_of
from transforms.runners import ROOT

MODEL = "models.zoo:recommender?hash_size=65536"  # the job's default --model, with its default --hash_size
MAX_CLOCK_SKEW_MS = 3600 * 1000  # the job's default --max_clock_skew_s


class Floor:
    """The main job's state between records, and its steps; `emit(prediction)` gets each
    scored prediction. `counts` says where the records that gave none went."""

    def __init__(self, window_ms: int, partitions, emit):
        self.window_ms, self.emit = window_ms, emit
        self.payloads = AvroPayloads("interaction")
        self.latest = dict.fromkeys(partitions)  # partition -> latest event time read (None: nothing yet)
        self.waiting = []  # heap of (event time, event id, arrival, Row): read, not applied yet
        self.closes = []  # heap of (time, impression id): when an attribution window closes
        self.attributions = {}  # impression id -> its Attribution, until its window closes
        self.profiles = {kind: {} for kind in PROFILES}
        models = _models(MODEL, baselines=True)
        self.keys = sorted(models)
        self.learner = Learner(models, serde.process_key())
        self.learner.open()
        self.models = {key: (self.learner.new_model(key), 0, None) for key in self.keys}  # (model, step, clock)
        self.served = {}  # (model key, event id) -> the served Prediction, until its label is learned
        self.counts = collections.Counter()
        self._arrivals = itertools.count()

    def read(self, record: KafkaRecord) -> None:
        """Decodes a record and keeps it until the watermark passes it; drops it if it cannot be
        decoded, is from the future or is late (the job's source makes these dead letters)."""
        try:
            row = self.payloads.row(record)
        except ValueError:
            self.counts["dead_letters.DecodeAvro"] += 1
            return
        latest = self.latest[record.partition]
        if record.timestamp_ms >= 0 and row.event_time - record.timestamp_ms > MAX_CLOCK_SKEW_MS:
            self.counts["dead_letters.future"] += 1
        elif latest is not None and row.event_time < latest:
            self.counts["dead_letters.late"] += 1
        else:
            self.latest[record.partition] = row.event_time  # not behind: the partition's latest now
            heapq.heappush(self.waiting, (row.event_time, row.event_id, next(self._arrivals), row))

    def advance(self) -> None:
        """Applies every instant the watermark has passed, in event-time order."""
        if None in self.latest.values():
            return  # a partition not read yet may still bring anything
        watermark = min(self.latest.values())
        while True:
            due = [heap[0][0] for heap in (self.waiting, self.closes) if heap]
            if not due or min(due) >= watermark:
                return
            self._instant(min(due))

    def _instant(self, t: int) -> None:
        examples = []
        while self.closes and self.closes[0][0] == t:
            _, impression_id = heapq.heappop(self.closes)
            join = self.attributions.get(impression_id)
            if join is None or join.closes_at != t:
                continue  # an outcome's early window, since moved by its impression
            del self.attributions[impression_id]
            label, orphans = join.close(t)
            self.counts["dead_letters.LabelImpressions"] += len(orphans)
            if label is not None:
                examples += _for_models(label, self.keys)
        rows = []
        while self.waiting and self.waiting[0][0] == t:
            rows.append(heapq.heappop(self.waiting)[3])
        valid = [row for row in rows if invalid_reason(row.fields) is None]
        self.counts["dead_letters.ValidateInteractions"] += len(rows) - len(valid)
        for kind in PROFILES:
            valid = self._featurise(kind, valid)
        for row in valid:
            self._attribute(row)
            if row.fields["event_type"] == "impression":
                examples += _for_models(served_example(row, MAIN), self.keys)
        self._learn(examples)

    def _featurise(self, kind: str, rows: list) -> list:
        """One instant's rows, each impression with the `kind` features of its key as of before
        the instant (`core.features.featurise` per key), in the same order."""
        profile_type, field = PROFILES[kind]
        by_key = collections.defaultdict(list)
        for i, row in enumerate(rows):
            by_key[row.fields[field]].append(i)
        out = list(rows)
        for key, indices in by_key.items():
            profile = self.profiles[kind].setdefault(key, profile_type())
            for i, row in zip(indices, featurise(profile, [rows[i] for i in indices])):
                out[i] = row
        return out

    def _attribute(self, row) -> None:
        """The row to its impression's attribution; its window's close goes on the heap."""
        key = impression_of(row)
        join = self.attributions.get(key)
        if join is None:
            join = self.attributions[key] = Attribution(self.window_ms, MAIN)
        before = join.closes_at
        for out in join.arrive(row):  # joined outcome ids and dead letters: counted, not kept
            self.counts["outcomes_joined" if out.tag == JOINED else "dead_letters.LabelImpressions"] += 1
        if join.closes_at != before:
            heapq.heappush(self.closes, (join.closes_at, key))

    def _learn(self, examples: list) -> None:
        """Each model applies the instant's examples (served and labels) in (event time, event
        id) order; a learned label sends out the prediction served for it, scored."""
        by_key = collections.defaultdict(list)
        for example in examples:
            by_key[example.model_key].append(example)
        for key, ready in by_key.items():
            model, step, clock = self.models[key]
            out, made, learned, last, step = self.learner.apply(key, ready, model, step, clock)
            self.models[key] = (model, step, clock if last is None else last)
            self.counts["dead_letters.LearnOnline"] += sum(kind == DEAD_LETTER for kind, _ in out)
            for prediction in made:
                self.served[(key, prediction.event_id)] = prediction
            for label in learned:
                served = self.served.pop((key, label.event_id), None)
                if served is None:
                    self.counts["unpaired.label"] += 1
                    continue
                self.emit(dataclasses.replace(served, y_true=label.y, origin=label.origin))


def run(bootstrap: str, topic: str, out: str, window_s: float, stop: threading.Event) -> collections.Counter:
    """The loop, until `stop` is set; returns the counts."""
    reader = consumer(bootstrap, f"stream-floor-{uuid.uuid4().hex[:8]}")
    partitions = sorted(reader.list_topics(topic, timeout=10).topics[topic].partitions)
    if not partitions:
        raise SystemExit(f"no topic {topic!r} at {bootstrap}")
    reader.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5})

    def emit(prediction):  # as the job's WriteToKafka: keyed by model, stamped with the event time
        producer.produce(out, key=prediction.model_key.encode(), value=encode(prediction.to_avro(), "prediction"),
                         timestamp=prediction.event_time)
        producer.poll(0)
        floor.counts["predictions"] += 1

    floor = Floor(int(window_s * 1000), partitions, emit)
    print("ready", flush=True)
    try:
        while not stop.is_set():
            sent = floor.counts["predictions"]
            for m in reader.consume(500, timeout=0.1):  # the job's reader: at most 500 a poll, 0.1 s
                if m.error() is not None and not is_transient(m.error()):
                    raise KafkaException(m.error())
                if m.error() is None:
                    floor.read(KafkaRecord(m.topic(), m.partition(), m.offset(), m.key(), m.value(), m.timestamp()[1]))
            floor.advance()
            if floor.counts["predictions"] > sent:
                producer.flush(30)  # delivered before the next poll, as the job confirms each bundle
    finally:
        producer.flush(10)
        reader.close()
    return floor.counts


def measure_floor(bootstrap: str, impressions: int, rate: float) -> dict:
    """One run of the floor at `rate` records/s (0: as fast as possible), measured as
    `benchmarks.full_job.measure_full` measures the main job."""
    topic, prefix = f"bench-floor-{uuid.uuid4().hex[:6]}", f"bench-out-{uuid.uuid4().hex[:6]}"
    ensure_topic(bootstrap, topic, PARTITIONS)
    ensure_topic(bootstrap, f"{prefix}.predictions", 1)
    (ROOT / "out").mkdir(exist_ok=True)
    log = open(ROOT / "out" / "bench-floor.log", "w")
    job = subprocess.Popen([sys.executable, "-m", "benchmarks.stream_floor", "--bootstrap", bootstrap, "--topic", topic,
                            "--out", f"{prefix}.predictions", "--window_s", str(WINDOW_S)],
                           cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True, start_new_session=True)
    reads, done = {}, threading.Event()
    threading.Thread(target=read_predictions, args=(bootstrap, f"{prefix}.predictions", reads, done),
                     daemon=True).start()
    try:
        wait_ready(job, "the floor", log.name)  # its start-up (imports, models) is not latency
        config = simulator.SimulatorConfig(impressions=impressions, late_fraction=0.0, malformed_fraction=0.0,
                                           attribution_window_ms=WINDOW_S * 1000)
        sent_at, last = produce_stamped(bootstrap, topic, list(simulator.generate(config)), rate)
        wait_for(lambda: sent_at.keys() <= reads.keys() or job.poll() is not None, 60 + len(sent_at) / 20)
    finally:
        done.set()
        stop_job(job)
    return full_row("floor", "local", rate, sent_at, last, reads)


def wait_ready(job: subprocess.Popen, what: str, log: str, timeout_s: float = 120) -> None:
    """Until `job` prints `ready` on its stdout; RuntimeError if it exits or stays silent."""
    if select.select([job.stdout], [], [], timeout_s)[0] and job.stdout.readline().strip() == "ready":
        return
    stop_job(job)
    raise RuntimeError(f"{what} did not start (exit code {job.returncode}); its log: {log}")


def stop_job(job: subprocess.Popen) -> None:
    """SIGTERM to the job's process group (it has its own session), then wait for it."""
    if job.poll() is None:
        os.killpg(job.pid, signal.SIGTERM)
    try:
        job.wait(30)
    except subprocess.TimeoutExpired:
        job.kill()
        job.wait()


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.stream_floor", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:19092")
    parser.add_argument("--topic", required=True, help="interactions, schemaless Avro (schemas/interaction.avsc)")
    parser.add_argument("--out", required=True, help="the topic the scored predictions go to")
    parser.add_argument("--window_s", type=float, default=WINDOW_S,
                        help="the attribution window, seconds of event time (default %(default)s)")
    args = parser.parse_args(argv)
    stop = threading.Event()
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, lambda *_: stop.set())
    counts = run(args.bootstrap, args.topic, args.out, args.window_s, stop)
    print(", ".join(f"{k} {v}" for k, v in sorted(counts.items())), file=sys.stderr)


if __name__ == "__main__":
    main()
