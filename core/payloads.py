"""Kafka payloads as rows: a record's value decoded into fields, with its event id and time.

The event time is the payload's own field, never the Kafka timestamp: ordinary producers stamp
the time of sending, and a record sent late must be judged by when it happened.

>>> import schemas
>>> from core.kafka import KafkaRecord, encode
>>> event = {"event_id": "e1", "event_type": "impression", "event_time": 1500, "user_id": "u",
...          "item_id": "i", "item_genres": [], "position": 1, "impression_id": None,
...          "watch_seconds": None}
>>> payloads = AvroPayloads("interaction")
>>> row = payloads.row(KafkaRecord("t", 0, 7, None, encode(event, "interaction"), 99_000))
>>> row.event_id, row.event_time, row.origin
('e1', 1500, (('t', 0, 7, 7),))
>>> payloads.row(KafkaRecord("t", 0, 8, None, b"\\x02junk", 99_000))  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
ValueError: undecodable interaction record: ...
"""
from __future__ import annotations

import importlib
import io

import fastavro

import schemas
from core.decoding import parse_event_time, required_text
from core.kafka import KafkaRecord, schema_text
from core.records import Row


class AvroPayloads:
    """Values in schemaless Avro of the project's schema `schema` (`schemas/<schema>.avsc`)."""

    def __init__(self, schema: str, id_field: str = "event_id", time_field: str = "event_time"):
        self.schema, self.id_field, self.time_field = schema, id_field, time_field
        self._parsed = schemas.load(schema)  # unknown schema: fail now

    def row(self, record: KafkaRecord) -> Row:
        """The record as a `Row`; ValueError with the reason when its value cannot be one."""
        try:
            fields = fastavro.schemaless_reader(io.BytesIO(record.value or b""), self._parsed)
        except Exception as e:  # any decode failure is the record's, not the pipeline's
            raise ValueError(f"undecodable {self.schema} record: {e!r}") from e
        return _as_row(self, fields, record)


class RegistryPayloads:
    """Values in the Confluent wire format: magic byte 0, the writer schema's 4-byte big-endian
    id in the schema registry at `url` (its Confluent API, e.g. `.../apis/ccompat/v7`), then the
    Avro body. The project's schema `schema` is the *reader* schema, so writer schemas that
    evolved compatibly (extra fields, missing fields with defaults) resolve to it.

    A bad value (wrong magic byte, header cut short, schema id the registry does not know, body
    that does not decode or resolve) is the record's fault: ValueError with the reason. A
    registry that does not answer (or fails, HTTP 5xx) is not: ConnectionError, which fails the
    bundle so that Beam retries it. Picklable: the registry client is made on first use, on the
    worker.
    """

    def __init__(self, url: str, schema: str, id_field: str = "event_id",
                 time_field: str = "event_time"):
        self.url, self.schema, self.id_field, self.time_field = url, schema, id_field, time_field
        self._reader = schema_text(schema)  # unknown schema: fail now
        self._deserializer = None

    def __getstate__(self):
        return {**self.__dict__, "_deserializer": None}

    def _deserialize(self, record: KafkaRecord):
        from confluent_kafka.schema_registry import SchemaRegistryClient
        from confluent_kafka.schema_registry.avro import AvroDeserializer
        from confluent_kafka.serialization import MessageField, SerializationContext

        if self._deserializer is None:
            self._deserializer = AvroDeserializer(SchemaRegistryClient({"url": self.url}), self._reader)
        return self._deserializer(record.value, SerializationContext(record.topic, MessageField.VALUE))

    def row(self, record: KafkaRecord) -> Row:
        """The record as a `Row`; ValueError with the reason when its value cannot be one,
        ConnectionError when the registry cannot be asked."""
        value = record.value or b""
        if len(value) < 5:
            raise ValueError(f"not Confluent wire format: {len(value)} bytes, "
                             f"shorter than the 5-byte header (magic byte, schema id)")
        if value[0] != 0:
            raise ValueError(f"not Confluent wire format: magic byte {value[0]}, not 0")
        schema_id = int.from_bytes(value[1:5], "big")
        try:
            fields = self._deserialize(record)
        except Exception as e:  # sorted below: the record's fault, or the registry's
            raise _registry_error(e, self.url, schema_id, self.schema) from e
        if not isinstance(fields, dict):
            raise ValueError(f"undecodable {self.schema} record (writer schema id {schema_id}): "
                             f"not a record but {type(fields).__name__}")
        return _as_row(self, fields, record)


def _registry_error(e: Exception, url: str, schema_id: int, schema: str) -> Exception:
    """The exception to raise for a failed wire-format decode: ValueError when the record is at
    fault, ConnectionError when the registry is."""
    from confluent_kafka.schema_registry.error import SchemaRegistryError

    if isinstance(e, SchemaRegistryError):
        status = e.http_status_code
        if status == 404 or status in range(400, 500) and status not in (401, 403, 408, 429):
            return ValueError(f"unknown writer schema id {schema_id} in the registry "
                              f"(HTTP {status}: {e.error_message})")
        return ConnectionError(f"schema registry {url} failed for schema id {schema_id}: "
                               f"HTTP {status}: {e.error_message}")
    if _is_transport_error(e):
        return ConnectionError(f"schema registry {url} unreachable for schema id {schema_id}: {e!r}")
    return ValueError(f"undecodable {schema} record (writer schema id {schema_id}): {e!r}")


def _is_transport_error(e: BaseException) -> bool:
    """Whether `e` (or what caused it) is a failure to talk to the registry at all."""
    transport = [OSError]  # refused, reset, timed out, DNS: whichever HTTP client the registry's uses
    for client in ("httpx2", "httpx"):
        try:
            transport.append(importlib.import_module(client).TransportError)
        except ImportError:
            pass
    while e is not None:
        if isinstance(e, tuple(transport)):
            return True
        e = e.__cause__ or e.__context__
    return False


def _as_row(payloads, fields: dict, record: KafkaRecord) -> Row:
    """`fields` as a `Row` by `payloads`' id and time fields; ValueError if they are unusable."""
    try:
        event_id = required_text(fields, payloads.id_field)
        event_time = parse_event_time(fields.get(payloads.time_field))
    except ValueError as e:
        raise ValueError(f"undecodable {payloads.schema} record: {e}") from e
    return Row(event_id, event_time, fields, record.origin())
