"""Kafka clients over confluent-kafka, shared by the learning and the serving plane: a record
as read, consumers, a producer of Avro records, topics and offsets, and patience with a broker
that is away for a while (a restart)."""
from __future__ import annotations

import dataclasses
import io
import logging
import pathlib
import time
from typing import Callable

import fastavro
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

import schemas

# Errors of a broker that is away for a while (a restart): wait for it, do not fail the job.
TRANSIENT = (KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError._TIMED_OUT,
             KafkaError._RESOLVE, KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_NOT_AVAILABLE,
             KafkaError.COORDINATOR_LOAD_IN_PROGRESS, KafkaError.REQUEST_TIMED_OUT)


@dataclasses.dataclass(frozen=True)
class KafkaRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int
    first_offset: int = -1  # the first offset this record accounts for: < offset after a gap

    def where(self) -> str:
        return f"{self.topic}/{self.partition}@{self.offset}"

    def origin(self) -> tuple:
        """This record's span, for `core.records.Row.origin` and offset commits."""
        first = self.offset if self.first_offset < 0 else self.first_offset
        return ((self.topic, self.partition, first, self.offset),)


def parse_location(location: str, what: str, name: str = "TOPIC") -> tuple[str, str]:
    """kafka://HOST:PORT/NAME -> (bootstrap, name); a ValueError that says what `what` expects.

    >>> parse_location("kafka://127.0.0.1:19092/signals", "signals")
    ('127.0.0.1:19092', 'signals')
    >>> parse_location("127.0.0.1:19092/signals", "signals")
    Traceback (most recent call last):
    ...
    ValueError: signals '127.0.0.1:19092/signals': expected kafka://HOST:PORT/TOPIC
    """
    bootstrap, _, topic = location.removeprefix("kafka://").partition("/")
    if not location.startswith("kafka://") or not bootstrap or not topic or "/" in topic:
        raise ValueError(f"{what} {location!r}: expected kafka://HOST:PORT/{name}")
    return bootstrap, topic


def consumer(bootstrap: str, group_id: str) -> Consumer:
    return Consumer({"bootstrap.servers": bootstrap, "group.id": group_id,
                     "enable.auto.commit": False, "auto.offset.reset": "earliest",
                     "enable.partition.eof": False})


def is_transient(error: KafkaError) -> bool:
    """Whether `error` is one to wait out (the broker is restarting), not a failure."""
    return not error.fatal() and (error.code() in TRANSIENT or error.retriable())


def retrying(call, what: str, patience_s: float = 120.0):
    """`call()`, retried while the broker is away (a restart) for up to `patience_s`."""
    deadline = time.monotonic() + patience_s
    while True:
        try:
            return call()
        except KafkaException as e:
            if not is_transient(e.args[0]) or time.monotonic() > deadline:
                raise
            logging.warning("Kafka: %s: %s; retrying", what, e)
            time.sleep(1.0)


def committed_offsets(c: Consumer, partitions, patience_s: float = 120.0):
    """The group's committed offsets; retries while the broker says to (a new cluster's group
    coordinator answers NOT_COORDINATOR until its offsets topic exists)."""
    return retrying(lambda: c.committed(partitions, timeout=10), "committed offsets", patience_s)


def encode(record: dict, schema: str) -> bytes:
    """Schemaless Avro bytes of `record`.

    >>> len(encode({"stage": "s", "reason": "r", "payload": b"x"}, "dead_letter")) > 0
    True
    """
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, schemas.load(schema), record)
    return buffer.getvalue()


def decode(value: bytes | None, schema: str) -> dict | None:
    """The record of schemaless Avro bytes written with `schema`, or None if they are not one
    (an error in decoding, or bytes left over).

    >>> decode(encode({"stage": "s", "reason": "r", "payload": b"x"}, "dead_letter"), "dead_letter")["reason"]
    'r'
    >>> decode(b"{}", "dead_letter") is None
    True
    """
    buffer = io.BytesIO(value or b"")
    try:
        record = fastavro.schemaless_reader(buffer, schemas.load(schema), None)
    except Exception:  # noqa: BLE001  (not such a record: any decoding error says so)
        return None
    return record if buffer.tell() == len(value or b"") else None


def schema_text(schema: str) -> str:
    """The JSON text of the project's schema `schemas/<schema>.avsc` (for a schema registry)."""
    schemas.load(schema)  # unknown schema: the error that lists the known ones
    return (pathlib.Path(schemas.__file__).parent / f"{schema}.avsc").read_text()


REGISTER_ATTEMPTS = 5


def _lost_registration_race(error) -> bool:
    """Whether a registration failed only because another writer registered the same schema at
    the same moment (a job's parallel workers on a new subject): Apicurio answers 409 "already
    exists", or 500 when two inserts of the same content collide in its database (SQL state
    23505). Registering again then finds the schema."""
    return error.http_status_code == 409 or (
        error.http_status_code == 500 and "23505" in str(error.error_message))


def value_encoder(schema: str, topic: str, registry: str | None = None) -> Callable[[dict], bytes]:
    """record -> value bytes for `topic`: schemaless Avro of `schema`, or with a schema
    `registry` URL the Confluent wire format (magic byte 0, 4-byte big-endian schema id, Avro),
    the schema registered under the subject `<topic>-value` (TopicNameStrategy) on first use.

    >>> value_encoder("dead_letter", "t")({"stage": "s", "reason": "r", "payload": b"x"})[:2]
    b'\\x02s'
    """
    if not registry:
        return lambda record: encode(record, schema)
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    from confluent_kafka.schema_registry.error import SchemaRegistryError

    serializer = AvroSerializer(SchemaRegistryClient({"url": registry}), schema_text(schema),
                                conf={"auto.register.schemas": True})
    context = SerializationContext(topic, MessageField.VALUE)

    def to_value(record: dict) -> bytes:
        for attempt in range(REGISTER_ATTEMPTS):
            try:
                return serializer(record, context)
            except SchemaRegistryError as e:
                if not _lost_registration_race(e) or attempt == REGISTER_ATTEMPTS - 1:
                    raise
                time.sleep(0.05 * (attempt + 1))

    return to_value


def produce(records, bootstrap: str, topic: str, schema: str, key_field: str,
            time_field: str = "event_time", rate: float | None = None,
            registry: str | None = None) -> int:
    """Produces dicts to `topic` (Avro, keyed by `key_field`, Kafka timestamp = `time_field`, or
    the time of sending when it is None, as most producers stamp), at `rate` records/s or as
    fast as possible; returns the count once all are acknowledged. With a schema `registry`
    URL the values are in the Confluent wire format (`value_encoder`), else schemaless Avro.

    Raises RuntimeError if any record was not delivered.
    """
    to_value = value_encoder(schema, topic, registry)
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
                producer.produce(topic, key=str(record[key_field]).encode(), value=to_value(record),
                                 timestamp=max(int(record[time_field]), 0) if time_field else 0,
                                 on_delivery=delivered)
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


def recreate_topic(bootstrap: str, topic: str, partitions: int = 3, timeout_s: float = 60.0) -> None:
    """Deletes `topic` if it exists (and waits until it is gone), then creates it empty."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    if topic in admin.list_topics(timeout=10).topics:
        admin.delete_topics([topic])[topic].result(timeout=30)
    deadline = time.monotonic() + timeout_s
    while True:  # deletion finishes in the background: creating too soon is refused
        try:
            if topic not in admin.list_topics(timeout=10).topics:
                ensure_topic(bootstrap, topic, partitions)
                return
        except KafkaException as e:
            if "marked for deletion" not in str(e) and "TOPIC_ALREADY_EXISTS" not in str(e):
                raise
        if time.monotonic() > deadline:
            raise RuntimeError(f"topic {topic!r} at {bootstrap} was not deleted within {timeout_s:.0f} s")
        time.sleep(0.2)


def end_offsets(bootstrap: str, topic: str) -> dict:
    """{partition: end offset} of `topic` now."""
    c = consumer(bootstrap, "streamml-end-offsets")
    try:
        partitions = retrying(lambda: c.list_topics(topic, timeout=10), f"partitions of {topic!r}").topics[topic].partitions
        return {p: retrying(lambda: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1],
                            f"end of {topic}/{p}") for p in partitions}
    finally:
        c.close()


def commit_at_least(bootstrap: str, group_id: str, topic: str, offsets: dict) -> dict:
    """Commits `offsets` for the partitions where they are ahead of the group's committed
    offsets (a finished bounded run: everything below them was written); returns the
    group's offsets after."""
    c = consumer(bootstrap, group_id)
    try:
        done = {tp.partition: tp.offset for tp in committed_offsets(c, [TopicPartition(topic, p) for p in offsets])}
        ahead = [TopicPartition(topic, p, o) for p, o in offsets.items() if o > done.get(p, -1)]
        if ahead:
            retrying(lambda: c.commit(offsets=ahead, asynchronous=False), f"commit {topic}")
        return {**done, **{tp.partition: tp.offset for tp in ahead}}
    finally:
        c.close()


def topics(bootstrap: str, timeout_s: float = 10.0) -> dict:
    """The cluster's topics {name: partitions}; ConnectionError if no broker answers in time.

    >>> topics("127.0.0.1:9", timeout_s=1)
    Traceback (most recent call last):
    ...
    ConnectionError: no Kafka broker answered at 127.0.0.1:9 within 1 s
    """
    from confluent_kafka.admin import AdminClient

    # log_level 0: librdkafka would print a line per failed connection attempt (20 a second).
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    try:
        found = admin.list_topics(timeout=timeout_s).topics
    except KafkaException as e:
        raise ConnectionError(f"no Kafka broker answered at {bootstrap} within {timeout_s:g} s") from e
    return {name: sorted(t.partitions) for name, t in found.items()}
