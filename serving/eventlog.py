"""Where a server logs what it served and the outcomes apps report: interaction records
(`schemas/interaction.avsc`) that the learning plane reads, labels and learns from.

`open_event_log(location)` picks the log:

- `kafka://HOST:PORT/TOPIC`: the interactions topic of the streaming learner (keyed by user,
  Kafka timestamp = event time; schemaless Avro, or the Confluent wire format with a schema
  registry URL). Records are sent asynchronously: a request never waits for the broker; a
  record the broker did not take is counted in `failed` and logged, never dropped silently.
- a file path ending in `.avro`: an Avro container file; each record is encoded as it is
  written, and appended in batches (every 50 ms and at close) under a file lock, so that
  several servers may share it; the batch job reads it
  (`python -m pipelines.recommend --input out/recommend/served.avro`).

>>> import tempfile, fastavro
>>> path = tempfile.mkdtemp() + "/served.avro"
>>> log = open_event_log(path)
>>> log.write({"event_id": "r1", "event_type": "impression", "event_time": 5, "user_id": "u",
...            "item_id": "i", "position": 0})
>>> log.close()
>>> [(r["event_id"], r["position"]) for r in fastavro.reader(open(path, "rb"))]
[('r1', 0)]
"""
from __future__ import annotations

import fcntl
import io
import logging
import os
import threading
from typing import NamedTuple, Protocol

import fastavro
from confluent_kafka import Producer

import schemas
from core.kafka import parse_location, value_encoder
from serving.encoding import record_encoder

LOG = logging.getLogger(__name__)


class EventLog(Protocol):
    failed: int  # records that could not be logged

    def write(self, record: dict) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


def open_event_log(location: str, schema_registry: str | None = None, schema: str = "interaction") -> EventLog:
    """The log at `location`, of records of `schemas/<schema>.avsc` (keyed by their user_id)."""
    kind, where = check_location(location)
    return KafkaEventLog(*where, schema_registry, schema) if kind == "kafka" else AvroFileEventLog(where, schema=schema)


def shadow_location(location: str) -> str:
    """Where the shadow predictions of the event log at `location` go: TOPIC.shadow, or
    NAME.shadow.avro beside the file."""
    return f"{location}.shadow" if location.startswith("kafka://") else location[:-len(".avro")] + ".shadow.avro"


def check_location(location: str) -> tuple[str, object]:
    """("kafka", (bootstrap, topic)) or ("file", path); ValueError for any other form."""
    if location.startswith("kafka://"):
        return "kafka", parse_location(location, "event log")
    if location.endswith(".avro"):
        return "file", location
    raise ValueError(f"event log {location!r}: expected kafka://HOST:PORT/TOPIC or a path ending in .avro")


class KafkaEventLog:
    """Interaction records to a Kafka topic, sent without waiting for the broker."""

    def __init__(self, bootstrap: str, topic: str, schema_registry: str | None = None, schema: str = "interaction"):
        self.topic, self.schema, self.failed = topic, schema, 0
        # The Confluent wire format goes through confluent-kafka's serializer (it registers the
        # schema); schemaless Avro through the server's faster encoder, the same bytes.
        self._encode = value_encoder(schema, topic, schema_registry) if schema_registry else record_encoder(schema)
        self._producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 2})

    def write(self, record: dict) -> None:
        try:
            value = self._encode(record)
        except (ValueError, TypeError) as e:  # does not fit the schema: counted, the request goes on
            self._lost(f"a record that does not fit the {self.schema} schema ({e}): {record!r:.300}")
            return
        for _ in range(50):
            try:
                self._producer.produce(self.topic, key=record["user_id"].encode(), value=value,
                                       timestamp=record["event_time"], on_delivery=self._delivered)
                break
            except BufferError:  # the local queue is full: the broker is away or slow
                self._producer.poll(0.01)
        else:
            self._lost(f"the producer's queue stayed full: {record.get('event_id') or record.get('impression_id')}")
        self._producer.poll(0)  # runs the delivery callbacks of earlier records

    def flush(self) -> None:
        self._producer.poll(0)

    def close(self) -> None:
        left = self._producer.flush(10)
        if left:
            self._lost(f"{left} records not delivered to {self.topic!r} at close", left)

    def _delivered(self, error, message):
        if error is not None:
            self._lost(f"not delivered to {self.topic!r}: {error}")

    def _lost(self, why: str, count: int = 1):
        self.failed += count
        LOG.error("event log: %s", why)


class AvroFileEventLog:
    """Interaction records appended to an Avro container file, in batches.

    A record is encoded when it is written, by the thread that writes it (a server's event
    loop): the cost is spread over the requests. Encoded by the flushing thread instead, a
    50 ms batch at 1,000 lookups/s (500 records, several ms of CPU holding the GIL) stalled the
    answers behind it: p99 4.7-6.5 ms against 2.3-3.1 ms, measured with `benchmarks.serving`.
    Nor does a process of its own help on the server's one core: encoding and writing there
    (niced, or SCHED_IDLE), p99 went up to 3.6-6.1 ms.
    """

    def __init__(self, path: str, flush_s: float = 0.05, schema: str = "interaction"):
        self.path, self.schema, self.failed = path, schema, 0
        self._schema = fastavro.parse_schema(schemas.load(schema))
        self._encode = record_encoder(schema)
        self._pending: list[bytes] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(flush_s,), name="event-log", daemon=True)
        self._thread.start()

    def write(self, record: dict) -> None:
        try:
            encoded = self._encode(record)
        except ValueError as e:  # does not fit the schema: counted, the request goes on
            self._lost(f"a record that does not fit the {self.schema} schema ({e}): {record!r:.300}", 1)
            return
        with self._lock:
            self._pending.append(encoded)

    def flush(self) -> None:
        with self._lock:
            records, self._pending = self._pending, []
        if not records:
            return
        try:
            self._append(records)
        except OSError as e:
            self._lost(f"{len(records)} records not written to {self.path}: {e}", len(records))

    def _append(self, records: list[bytes]) -> None:
        with open(self.path, "a+b") as f:
            fcntl.flock(f, fcntl.LOCK_EX)  # one writer at a time across processes
            f.seek(0, os.SEEK_END)  # fastavro appends (reads the header first) when not at 0
            writer = fastavro.write.Writer(f, self._schema)
            writer.write_block(_Block(io.BytesIO(b"".join(records)), len(records)))  # one block, at the end
            writer.flush()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.flush()

    def _run(self, flush_s: float):
        while not self._stop.wait(flush_s):
            self.flush()

    def _lost(self, why: str, count: int):
        self.failed += count
        LOG.error("event log: %s", why)


class _Block(NamedTuple):
    """Records already encoded, as `fastavro.write.Writer.write_block` reads a block (one of
    `fastavro.block_reader`'s): their bytes, uncompressed, and their count."""
    bytes_: io.BytesIO
    num_records: int

