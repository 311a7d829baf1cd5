"""The server's Avro encoder (serving.encoding, cavro) writes fastavro's bytes, to the bit, for
every schema of the project: fastavro writes the records of the jobs and reads the server's
everywhere (files, Kafka, the learning plane)."""
import io
import pathlib

import fastavro
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import schemas
from core.kafka import decode, encode
from serving.encoding import record_encoder
from tests import fuzz_strategies as fs

SCHEMAS = sorted(p.stem for p in pathlib.Path(schemas.__file__).parent.glob("*.avsc"))
EXAMPLES = settings(max_examples=300, derandomize=True, database=None, deadline=None)


def nullable(schema: dict) -> list[str]:
    return [f["name"] for f in schema["fields"] if isinstance(f["type"], list) and "null" in f["type"]]


@pytest.mark.parametrize("schema", SCHEMAS)
@EXAMPLES
@given(data=st.data())
def test_the_same_bytes_as_fastavro_for_any_record_of_the_schema(schema, data):
    record = data.draw(fs.avro_values(schemas.load(schema)))
    assert record_encoder(schema)(record) == encode(record, schema)


@pytest.mark.parametrize("schema", SCHEMAS)
@EXAMPLES
@given(data=st.data())
def test_a_nullable_field_left_out_is_null_as_fastavro_writes_it(schema, data):
    parsed = schemas.load(schema)
    record = data.draw(fs.avro_values(parsed))
    left_out = data.draw(st.sets(st.sampled_from(nullable(parsed)))) if nullable(parsed) else set()
    record = {k: v for k, v in record.items() if k not in left_out}
    assert record_encoder(schema)(record) == encode(record, schema)
    decoded = decode(record_encoder(schema)(record), schema)
    assert all(decoded[name] is None for name in left_out)


@EXAMPLES
@given(st.sampled_from(fs.SIMULATED), st.integers(-(2**63), 2**63 - 1))
def test_the_simulators_records_and_any_long(record, event_time):
    record = {**record, "event_time": event_time}
    assert record_encoder("interaction")(record) == encode(record, "interaction")


def test_what_the_server_logs_numpy_numbers_included():
    """A served impression as `serving.service` logs it; a model's probability may be numpy's."""
    record = {"event_id": "r1-0", "event_type": "impression", "event_time": 1_796_424_333_548, "user_id": "u1",
              "item_id": "i1", "item_genres": ["drama"], "position": 0, "device": "tv", "model_key": "recommender",
              "model_version": 3, "propensity": 0.9, "served_features": {"user_ctr": np.float64(0.12), "n": 3},
              "served_probability": np.float64(0.25), "experiment": "e", "variant": "b", "bucket": 17,
              "assignment_probability": 0.5, "serve_ms": 0.4, "error": None}
    data = record_encoder("interaction")(record)
    assert data == encode(record, "interaction")
    assert fastavro.schemaless_reader(io.BytesIO(data), schemas.load("interaction"))["served_features"] \
        == {"user_ctr": 0.12, "n": 3.0}


@pytest.mark.parametrize("bad", [
    {"event_type": "purchase"},  # not a symbol of the enum (cavro: a KeyError)
    {"position": "first"},  # a string for an int
    {"event_time": 2**63},  # a long out of range (fastavro: an OverflowError)
    {"event_time": 1.5},  # a float for a long (fastavro writes 1)
    {"served_features": {"ctr": "high"}},  # a string in a map of doubles
    {"event_id": None},  # null for a string
])
def test_a_record_that_does_not_fit_is_a_value_error_that_says_so(bad):
    with pytest.raises(ValueError, match="does not fit the interaction schema"):
        record_encoder("interaction")({**fs.SIMULATED[0], **bad})


def test_a_required_field_left_out_is_a_value_error():
    record = {k: v for k, v in fs.SIMULATED[0].items() if k != "event_id"}
    with pytest.raises(ValueError, match="does not fit the interaction schema.*event_id"):
        record_encoder("interaction")(record)
