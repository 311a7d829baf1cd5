"""Kafka in and out, in Python over confluent-kafka (Beam's ReadFromKafka is a Java
cross-language transform that needs Docker here).

- `ReadFromKafka`: a splittable DoFn per topic partition. It reads from the consumer group's
  committed offset (else the earliest), claims offsets through an offset-range restriction,
  gives each record the Kafka timestamp as its event time, and advances the partition's
  watermark to the latest timestamp read. With `stop_at_end` it stops at the end offsets seen
  at start-up (a bounded replay of the topic); otherwise it runs forever, checkpointing
  itself between polls.
- `DecodeAvro`: schemaless Avro values to `Row`s; undecodable or incomplete values are dead
  letters carrying the original bytes and `topic/partition@offset`.
- `WriteToKafka`: Avro-encodes records, keys them, and confirms delivery: at the end of each
  bundle it flushes and raises if any record was not acknowledged, so Beam retries the bundle
  (at-least-once; consumers dedupe by key + event id).
"""
from __future__ import annotations

import dataclasses
import io
import json
import logging
import sys
from typing import Callable, NamedTuple, Sequence

import apache_beam as beam
import fastavro
from apache_beam.io.restriction_trackers import OffsetRange, OffsetRestrictionTracker
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.transforms.core import RestrictionProvider
from apache_beam.utils.timestamp import Duration, Timestamp
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

import schemas
from transforms import coders  # noqa: F401  (registers the record coders)
from transforms.records import DeadLetter, Row

DEAD_LETTERS = "dead_letters"
_UNBOUNDED_END = sys.maxsize


@dataclasses.dataclass(frozen=True)
class KafkaRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int

    def where(self) -> str:
        return f"{self.topic}/{self.partition}@{self.offset}"


def _consumer(bootstrap: str, group_id: str) -> Consumer:
    return Consumer({"bootstrap.servers": bootstrap, "group.id": group_id,
                     "enable.auto.commit": False, "auto.offset.reset": "earliest",
                     "enable.partition.eof": False})


class ReadFromKafka(beam.PTransform):
    """Reads every partition of `topics` as timestamped `KafkaRecord`s.

    Args:
        bootstrap: Kafka bootstrap servers.
        topics: topic names.
        group_id: consumer group whose committed offsets are the starting points.
        stop_at_end: stop at the end offsets found at start-up (bounded replay).
        poll_records: most records read per poll before the reader checkpoints itself.
    """

    def __init__(self, bootstrap: str, topics: Sequence[str], group_id: str,
                 stop_at_end: bool = False, poll_records: int = 500):
        super().__init__()
        if not topics:
            raise ValueError("name at least one topic")
        self.bootstrap, self.topics, self.group_id = bootstrap, list(topics), group_id
        self.stop_at_end, self.poll_records = stop_at_end, poll_records

    def expand(self, pbegin):
        return (
            pbegin
            | "Topics" >> beam.Create(self.topics)
            | "Partitions" >> beam.FlatMap(_partitions, self.bootstrap)
            | "Read" >> beam.ParDo((_ReadPartitionDoFn if self.stop_at_end else _ReadPartitionForeverDoFn)(
                self.bootstrap, self.group_id, self.stop_at_end, self.poll_records)))


def _partitions(topic: str, bootstrap: str):
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "streamml-metadata"})
    try:
        metadata = consumer.list_topics(topic, timeout=10)
    finally:
        consumer.close()
    found = metadata.topics.get(topic)
    if found is None or found.error is not None or not found.partitions:
        raise ValueError(f"Kafka topic {topic!r} not found at {bootstrap}: {found and found.error}")
    return [(topic, p) for p in sorted(found.partitions)]


class _CheckpointOnlyTracker(OffsetRestrictionTracker):
    """Offsets of one partition are read by one reader in order: the runner may checkpoint the
    reader (split at fraction 0), never split the offset range between readers (a split of
    [start, infinity) would start a second reader at a made-up offset)."""

    def try_split(self, fraction_of_remainder):
        return super().try_split(0) if fraction_of_remainder == 0 else None


class _ReadPartitionDoFn(beam.DoFn, RestrictionProvider):
    """Reads one (topic, partition); it is its own restriction provider (offset ranges)."""

    def __init__(self, bootstrap, group_id, stop_at_end, poll_records):
        self.bootstrap, self.group_id = bootstrap, group_id
        self.stop_at_end, self.poll_records = stop_at_end, poll_records

    def initial_restriction(self, element):
        topic, partition = element
        consumer = _consumer(self.bootstrap, self.group_id)
        try:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            committed = consumer.committed([TopicPartition(topic, partition)], timeout=10)[0].offset
        finally:
            consumer.close()
        start = committed if committed >= 0 else low
        return OffsetRange(start, max(start, high) if self.stop_at_end else _UNBOUNDED_END)

    def create_tracker(self, restriction):
        return _CheckpointOnlyTracker(restriction)

    def split(self, element, restriction):
        yield restriction  # one reader per partition: Kafka order within a partition is kept

    def restriction_size(self, element, restriction):
        return min(restriction.size(), 1_000_000)

    def truncate(self, element, restriction):
        return None if restriction.stop == _UNBOUNDED_END else restriction

    def setup(self):
        self._consumers = {}

    def teardown(self):
        for consumer in self._consumers.values():
            consumer.close()

    def process(self, element,
                tracker=beam.DoFn.RestrictionParam(),
                watermark=beam.DoFn.WatermarkEstimatorParam(ManualWatermarkEstimator.default_provider())):
        topic, partition = element
        position = tracker.current_restriction().start
        if position >= tracker.current_restriction().stop:
            return
        consumer = self._consumers.get(element)
        if consumer is None:
            consumer = self._consumers[element] = _consumer(self.bootstrap, self.group_id)
        consumer.assign([TopicPartition(topic, partition, position)])
        messages = consumer.consume(self.poll_records, timeout=0.5)
        for message in messages:
            if message.error() is not None:
                raise KafkaException(message.error())
            if not tracker.try_claim(message.offset()):
                return
            timestamp_ms = message.timestamp()[1]
            record = KafkaRecord(topic, partition, message.offset(), message.key(), message.value(),
                                 timestamp_ms)
            event_time = Timestamp(micros=timestamp_ms * 1000)
            if watermark.current_watermark() is None or event_time > watermark.current_watermark():
                watermark.set_watermark(event_time)
            yield beam.window.TimestampedValue(record, event_time)
        tracker.defer_remainder(Duration(seconds=0 if messages else 0.2))


class _ReadPartitionForeverDoFn(_ReadPartitionDoFn):
    """The same reader with no end offset: its output is unbounded."""

    @beam.DoFn.unbounded_per_element()
    def process(self, element, tracker=beam.DoFn.RestrictionParam(),
                watermark=beam.DoFn.WatermarkEstimatorParam(ManualWatermarkEstimator.default_provider())):
        yield from super().process(element, tracker, watermark)




class DecodeOutputs(NamedTuple):
    rows: beam.PCollection
    dead_letters: beam.PCollection


class DecodeAvro(beam.PTransform):
    """Kafka values (schemaless Avro of `schema`) -> `Row`s keyed by `id_field` and
    `time_field` (epoch ms); anything that does not decode is a dead letter."""

    def __init__(self, schema: str, id_field: str = "event_id", time_field: str = "event_time"):
        super().__init__()
        schemas.load(schema)  # unknown schema: fail now
        self.schema, self.id_field, self.time_field = schema, id_field, time_field

    def expand(self, records):
        results = records | "Decode" >> beam.ParDo(
            _DecodeDoFn(self.schema, self.id_field, self.time_field)).with_outputs(DEAD_LETTERS, main="rows")
        return DecodeOutputs(results.rows, results[DEAD_LETTERS])


class _DecodeDoFn(beam.DoFn):
    def __init__(self, schema, id_field, time_field):
        self.schema, self.id_field, self.time_field = schema, id_field, time_field

    def setup(self):
        self._schema = schemas.load(self.schema)

    def process(self, record: KafkaRecord):
        try:
            fields = fastavro.schemaless_reader(io.BytesIO(record.value or b""), self._schema)
            event_id, event_time = fields[self.id_field], fields[self.time_field]
        except Exception as e:  # any decode failure is the record's, not the pipeline's
            yield beam.pvalue.TaggedOutput(DEAD_LETTERS, DeadLetter(
                stage="DecodeAvro", reason=f"undecodable {self.schema} record: {e!r}",
                payload=record.value or b"", source=record.where(), event_time=record.timestamp_ms))
            return
        yield Row(str(event_id), int(event_time), fields)


def encode(record: dict, schema: str) -> bytes:
    """Schemaless Avro bytes of `record`.

    >>> len(encode({"stage": "s", "reason": "r", "payload": b"x"}, "dead_letter")) > 0
    True
    """
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, schemas.load(schema), record)
    return buffer.getvalue()


class WriteToKafka(beam.PTransform):
    """Writes records (with `to_avro()`) to `topic`, Avro-encoded, keyed by `key(record)`.

    Delivery is confirmed per bundle; a failed delivery fails the bundle (Beam retries it).
    """

    def __init__(self, bootstrap: str, topic: str, schema: str, key: Callable[[object], str]):
        super().__init__()
        schemas.load(schema)
        self.bootstrap, self.topic, self.schema, self.key = bootstrap, topic, schema, key

    def expand(self, records):
        return records | "Produce" >> beam.ParDo(
            _ProduceDoFn(self.bootstrap, self.topic, self.schema, self.key))


class _ProduceDoFn(beam.DoFn):
    def __init__(self, bootstrap, topic, schema, key):
        self.bootstrap, self.topic, self.schema, self.key = bootstrap, topic, schema, key

    def setup(self):
        self._producer = Producer({"bootstrap.servers": self.bootstrap, "enable.idempotence": True,
                                   "linger.ms": 5})

    def start_bundle(self):
        self._failures, self._sent = [], 0

    def process(self, record):
        self._producer.produce(self.topic, key=str(self.key(record)).encode(),
                               value=encode(record.to_avro(), self.schema),
                               timestamp=getattr(record, "event_time", None) or 0,
                               on_delivery=self._delivered)
        self._sent += 1
        self._producer.poll(0)

    def _delivered(self, error, message):
        if error is not None:
            self._failures.append(f"{message.topic()}: {error}")

    def finish_bundle(self):
        unflushed = self._producer.flush(30)
        if unflushed or self._failures:
            raise RuntimeError(f"Kafka delivery to {self.topic!r} failed for {len(self._failures)} of "
                               f"{self._sent} records ({unflushed} unflushed): {self._failures[:3]}")

    def teardown(self):
        self._producer.flush(10)


def produce(records, bootstrap: str, topic: str, schema: str, key_field: str,
            time_field: str = "event_time", rate: float | None = None) -> int:
    """Produces dicts to `topic` (Avro, keyed by `key_field`, Kafka timestamp = `time_field`),
    at `rate` records/s or as fast as possible; returns the count once all are acknowledged.

    Raises RuntimeError if any record was not delivered.
    """
    import time

    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5})
    failures, sent, start = [], 0, time.monotonic()

    def delivered(error, message):
        if error is not None:
            failures.append(str(error))

    for record in records:
        if rate:
            ahead = sent / rate - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)
        while True:
            try:
                producer.produce(topic, key=str(record[key_field]).encode(), value=encode(record, schema),
                                 timestamp=max(int(record[time_field]), 0), on_delivery=delivered)
                break
            except BufferError:  # local queue full: let deliveries drain
                producer.poll(0.1)
        sent += 1
        producer.poll(0)
    unflushed = producer.flush(60)
    if unflushed or failures:
        raise RuntimeError(f"{len(failures)} of {sent} records not delivered to {topic!r} "
                           f"({unflushed} unflushed): {failures[:3]}")
    logging.info("produced %d records to %s in %.1f s", sent, topic, time.monotonic() - start)
    return sent


def ensure_topic(bootstrap: str, topic: str, partitions: int = 3) -> None:
    """Creates `topic` with `partitions` partitions unless it exists."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    if topic in admin.list_topics(timeout=10).topics:
        return
    future = admin.create_topics([NewTopic(topic, partitions, 1)])[topic]
    try:
        future.result(timeout=30)
    except KafkaException as e:
        if "TOPIC_ALREADY_EXISTS" not in str(e):
            raise
