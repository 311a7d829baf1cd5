"""Kafka records decoded and written, in Python over confluent-kafka (Beam's ReadFromKafka is a Java
cross-language transform that needs Docker here).

- `DecodeAvro`: schemaless Avro values to `Row`s; undecodable or incomplete values are dead
  letters carrying the original bytes and `topic/partition@offset`.
- `WriteToKafka`: Avro-encodes records, keys them, and confirms delivery: at the end of each
  bundle it flushes and raises if any record was not acknowledged, so Beam retries the bundle
  (at-least-once; consumers dedupe by key + event id). Its output is the source spans
  (`origin`) of the records it delivered, by lane, for `transforms.io.offsets.CommitOffsets`.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue
from confluent_kafka import Producer

import schemas
from core.kafka import KafkaRecord, value_encoder
from core.payloads import AvroPayloads
from core.records import DeadLetter
from transforms.io.offsets import EVERY_LANE
from transforms import coders  # noqa: F401  (registers the record coders)

DEAD_LETTERS = "dead_letters"
FLUSH_TIMEOUT_S = 60  # long enough to outlast a broker restart


class DecodeOutputs(NamedTuple):
    rows: beam.PCollection
    dead_letters: beam.PCollection


class DecodeAvro(beam.PTransform):
    """Kafka values -> `Row`s by `payloads` (`core.payloads`; a schema name: its schemaless
    Avro); anything that does not decode is a dead letter. The rows keep the records' Kafka
    timestamps: `transforms.io.kafka_read.ReadFromKafka` decodes as it reads instead, and
    stamps each row with its event time."""

    def __init__(self, payloads: str | AvroPayloads):
        super().__init__()
        self.payloads = AvroPayloads(payloads) if isinstance(payloads, str) else payloads

    def expand(self, records):
        results = records | "Decode" >> beam.ParDo(_DecodeDoFn(self.payloads)).with_outputs(
            DEAD_LETTERS, main="rows")
        return DecodeOutputs(results.rows, results[DEAD_LETTERS])


class _DecodeDoFn(beam.DoFn):
    def __init__(self, payloads):
        self.payloads = payloads

    def process(self, record: KafkaRecord):
        try:
            yield self.payloads.row(record)
        except ValueError as e:
            yield beam.pvalue.TaggedOutput(DEAD_LETTERS, DeadLetter(
                stage="DecodeAvro", reason=str(e), payload=record.value or b"", source=record.where(),
                event_time=record.timestamp_ms, origin=record.origin()))


class WriteToKafka(beam.PTransform):
    """Writes records (with `to_avro()`) to `topic`, Avro-encoded, keyed by `key(record)`:
    schemaless, or with a schema `registry` URL in the Confluent wire format (subject
    `<topic>-value`, registered on first use; `core.kafka.value_encoder`).

    Delivery is confirmed per bundle; a failed delivery fails the bundle (Beam retries it).
    Returns the delivered records' source spans: one `((topic, partition), {lane: [(first,
    last), ...]})` per source partition and bundle, in the global window, where `lane(record)`
    names the result's lane (by default `EVERY_LANE`: see `transforms.io.offsets`).
    """

    def __init__(self, bootstrap: str, topic: str, schema: str, key: Callable[[object], str],
                 registry: str | None = None, lane: Callable[[object], str] | None = None):
        super().__init__()
        schemas.load(schema)
        self.bootstrap, self.topic, self.schema, self.key = bootstrap, topic, schema, key
        self.registry, self.lane = registry, lane

    def expand(self, records):
        return records | "Produce" >> beam.ParDo(
            _ProduceDoFn(self.bootstrap, self.topic, self.schema, self.key, self.registry, self.lane))


class _ProduceDoFn(beam.DoFn):
    def __init__(self, bootstrap, topic, schema, key, registry=None, lane=None):
        self.bootstrap, self.topic, self.schema, self.key = bootstrap, topic, schema, key
        self.registry, self.lane = registry, lane

    def setup(self):
        self._encode = value_encoder(self.schema, self.topic, self.registry)
        self._producer = Producer({"bootstrap.servers": self.bootstrap, "enable.idempotence": True,
                                   "linger.ms": 5})

    def start_bundle(self):
        self._failures, self._sent, self._spans, self._latest = [], 0, {}, MIN_TIMESTAMP

    def process(self, record, timestamp=beam.DoFn.TimestampParam):
        while True:
            try:
                self._producer.produce(self.topic, key=str(self.key(record)).encode(),
                                       value=self._encode(record.to_avro()),
                                       timestamp=getattr(record, "event_time", None) or 0,
                                       on_delivery=self._delivered)
                break
            except BufferError:  # local queue full (e.g. the broker is restarting): drain it
                self._producer.poll(0.5)
        self._sent += 1
        self._producer.poll(0)
        lane = EVERY_LANE if self.lane is None else self.lane(record)
        for topic, partition, first, last in getattr(record, "origin", ()):
            self._spans.setdefault((topic, partition), {}).setdefault(lane, []).append((first, last))
        self._latest = max(self._latest, timestamp)

    def _delivered(self, error, message):
        if error is not None:
            self._failures.append(f"{message.topic()}: {error}")

    def finish_bundle(self):
        unflushed = self._producer.flush(FLUSH_TIMEOUT_S)
        if unflushed or self._failures:
            raise RuntimeError(f"Kafka delivery to {self.topic!r} failed for {len(self._failures)} of "
                               f"{self._sent} records ({unflushed} unflushed): {self._failures[:3]}")
        # Only now, with every record acknowledged, may their sources be committed.
        for where, spans in self._spans.items():
            yield WindowedValue((where, spans), self._latest, [GlobalWindow()])

    def teardown(self):
        self._producer.flush(10)
