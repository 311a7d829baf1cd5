"""Every decoder, fuzzed (issue #13 item 5): Avro container files, Kafka values (schemaless
Avro and the Confluent wire format), JSON Lines and CSV, with valid encodings and mutations
of them that reach past the header (tests/fuzz_strategies.py), run through the decoding
DoFns themselves (`process` called directly, so thousands of inputs take seconds) and once
through pipelines.

The specification, for any input: no exception escapes; every output is a valid row or a
`DeadLetter` with a reason and the bytes it concerns; nothing is lost.

Known bugs each have a strict xfail test below, stating the property they break with a
minimal reproducer; the general properties' strategies leave out those triggers only where
the test says so.

Budget: the `ci` profile (default, deterministic) runs over 10,000 examples in all;
`HYPOTHESIS_PROFILE=long` runs 20 times as many, randomly:

    HYPOTHESIS_PROFILE=long .venv/bin/python -m pytest tests/test_fuzz.py --hypothesis-show-statistics
"""
import datetime
import json
import os

import apache_beam as beam
import fastavro
import pytest
from apache_beam.io import fileio
from apache_beam.io.filesystem import FileMetadata
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.utils.timestamp import MAX_TIMESTAMP, MIN_TIMESTAMP
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import schemas
from core.avro import UnreadableAvroFile
from core.decoding import MAX_EVENT_TIME_MS
from core.kafka import KafkaRecord, schema_text
from core.payloads import AvroPayloads, RegistryPayloads
from core.records import DeadLetter, Row
from tests import fuzz_strategies as fs
from transforms.io import files, kafka, kafka_read

settings.register_profile("ci", deadline=None, derandomize=True, database=None, print_blob=True,
                          report_multiple_bugs=False,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                 HealthCheck.filter_too_much])
settings.register_profile("long", parent=settings.get_profile("ci"), derandomize=False)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
settings.load_profile(PROFILE)
SCALE = {"ci": 1, "long": 20}[PROFILE]


def examples(n: int):
    """A property's share of the budget: n examples in CI (the shares add up to >= 10,000)."""
    return settings(max_examples=n * SCALE)


INTERACTION = schemas.load("interaction")
INTERACTION_FIELDS = {f["name"] for f in INTERACTION["fields"]}
PREDICTION = {"event_id": "e1", "model_key": "m", "event_time": 1500, "y_true": True, "y_pred": 0.7,
              "y_proba": None, "model_step": 3}


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """A folder for the files the file readers open (one file per format, rewritten per example;
    module-scoped, as Hypothesis wants)."""
    return tmp_path_factory.mktemp("fuzz")


def row_or_dead_letter(output, stage: str):
    """The Row or DeadLetter a DoFn output holds, after checking its form: a row has an event id
    and an integer event time, its element timestamp; a dead letter (on the dead-letter
    output) has a stage, a reason and bytes as payload (each property says which bytes)."""
    if isinstance(output, beam.pvalue.TaggedOutput):
        assert output.tag == "dead_letters"
        output = output.value
    elif isinstance(output, beam.window.TimestampedValue):  # the event time, to the millisecond
        assert not within_beam_time(output.value) or abs(
            output.timestamp.micros - output.value.event_time * 1000) < 1000
        output = output.value
    if isinstance(output, Row):
        assert isinstance(output.event_id, str) and output.event_id
        assert isinstance(output.event_time, int) and not isinstance(output.event_time, bool)
        return output
    assert isinstance(output, DeadLetter), output
    assert output.stage == stage and output.reason and isinstance(output.payload, bytes), output
    return output


def within_beam_time(row: Row) -> bool:
    """A row's event time is one Beam can carry as an element timestamp."""
    return MIN_TIMESTAMP.micros <= row.event_time * 1000 <= MAX_TIMESTAMP.micros


def same_record(a: dict, b: dict) -> bool:
    """Equal as interactions (by their Avro bytes: NaN equals NaN)."""
    return fs.encode(a, "interaction").data == fs.encode(b, "interaction").data


# --- Kafka values ------------------------------------------------------------------------------

def kafka_record(value) -> KafkaRecord:
    return KafkaRecord("interactions", 3, 41, b"key", value, 1_767_225_600_000)


VALUES = st.one_of(fs.kafka_values("interaction"), st.none())


def decode_avro(value) -> list:
    dofn = kafka._DecodeDoFn(AvroPayloads("interaction"))
    dofn.setup()
    return list(dofn.process(kafka_record(value)))


@examples(3000)
@given(VALUES)
def test_decode_avro_gives_each_value_one_row_or_one_dead_letter_with_its_bytes(value):
    """DecodeAvro: one output per Kafka value: a row with every interaction field and the
    record's origin, or a dead letter holding exactly the value (b"" for none), its place and
    Kafka timestamp."""
    record = kafka_record(value)
    [output] = decode_avro(value)
    out = row_or_dead_letter(output, "DecodeAvro")
    assert out.origin == record.origin()
    if isinstance(out, Row):
        assert set(out.fields) == INTERACTION_FIELDS and out.event_id == out.fields["event_id"]
    else:
        assert (out.payload, out.source, out.event_time) == (value or b"", record.where(), record.timestamp_ms)


@examples(700)
@given(fs.records("interaction"))
def test_a_valid_value_decodes_to_its_record(record):
    """A valid encoding is a row holding the record (a dead letter only without an event id)."""
    [output] = decode_avro(fs.encode(record, "interaction").data)
    out = row_or_dead_letter(output, "DecodeAvro")
    assert isinstance(out, DeadLetter) == (record["event_id"] == "")
    if isinstance(out, Row):
        assert same_record(out.fields, record) and out.event_time == record["event_time"]


def reader() -> kafka_read._ReadTopicDoFn:
    """The Kafka reader as it decodes (no broker: only its decoding step is called)."""
    return kafka_read._ReadTopicDoFn("127.0.0.1:1", "fuzz", True, 500, payloads=AvroPayloads("interaction"))


@examples(1500)
@given(VALUES)
def test_the_kafka_reader_decodes_each_value_to_one_row_or_dead_letter(value):
    """ReadFromKafka with payloads: each value is a row at its event time, or a dead letter with
    exactly the value and no event time to stamp it with."""
    element, event_time = reader()._decoded(kafka_record(value), None)
    out = row_or_dead_letter(element, "DecodeAvro")
    if isinstance(out, Row):
        assert event_time == out.event_time and set(out.fields) == INTERACTION_FIELDS
    else:
        assert out.payload == (value or b"") and event_time is None


@examples(200)
@given(fs.records("interaction").filter(lambda r: r["event_id"]))
@example({**fs.SIMULATED[0], "event_time": 2**62})
def test_the_kafka_reader_dead_letters_event_times_beam_cannot_carry(record):
    """A value whose event time Beam cannot carry as a timestamp is a dead letter, not a row."""
    element, _ = reader()._decoded(kafka_record(fs.encode(record, "interaction").data), None)
    assert isinstance(element, DeadLetter) or within_beam_time(element)


@pytest.fixture(scope="module")
def registry_payloads():
    """Wire-format payloads (`core.payloads.RegistryPayloads`) over confluent-kafka's in-process
    mock registry, which knows the interaction schema (id 1) and the prediction schema (id 2).
    The payloads make their deserializer on first use from the URL; here it is given one over
    the mock (the only part of them not under test)."""
    registry = SchemaRegistryClient.new_client({"url": "mock://fuzz"})
    ids = {registry.register_schema(f"{name}-value", Schema(schema_text(name), "AVRO")): name
           for name in ("interaction", "prediction")}
    payloads = RegistryPayloads("mock://fuzz", "interaction")
    payloads._deserializer = AvroDeserializer(registry, schema_text("interaction"))
    return payloads, ids


@examples(800)
@given(st.data())
def test_wire_format_values_give_one_row_or_one_dead_letter_with_their_bytes(registry_payloads, data):
    """DecodeAvro over the Confluent wire format: framed values of known ids (bodies valid,
    mutated, of another schema), of unknown ids, with a wrong magic byte, with the header cut
    short: one output each, a row with every interaction field or a dead letter holding
    exactly the value."""
    payloads, ids = registry_payloads
    value = data.draw(fs.wire_values(ids))
    dofn = kafka._DecodeDoFn(payloads)
    dofn.setup()
    [output] = dofn.process(kafka_record(value))
    out = row_or_dead_letter(output, "DecodeAvro")
    if isinstance(out, Row):
        assert set(out.fields) == INTERACTION_FIELDS
    else:
        assert out.payload == value


# --- Avro container files ----------------------------------------------------------------------

def read_avro(data: bytes, folder, bytes_per_range: int = 1) -> list | None:
    """ReadRows' steps over an Avro file holding `data`, with the interaction reader schema and
    event times from `event_time`: the check at construction, `_split` into ranges of whole
    blocks (`bytes_per_range` 1: a range per block), `_DecodeRangeDoFn` per range. None when
    ReadRows refuses the file at construction (`UnreadableAvroFile`)."""
    path = folder / "fuzz.avro"
    path.write_bytes(data)
    try:
        files.ReadRows(str(path), reader_schema=INTERACTION, timestamp_field="event_time")
    except UnreadableAvroFile:
        return None
    readable = fileio.ReadableFile(FileMetadata(str(path), len(data)), compression=files.UNCOMPRESSED)
    dofn = files._DecodeRangeDoFn(fastavro.parse_schema(INTERACTION), "event_time", None)
    dofn.setup()
    return [row_or_dead_letter(out, "ReadRows") for span in files._split(readable, bytes_per_range)
            for out in dofn.process(span)]


def rows_by_index(outputs) -> dict:
    """File index -> row (the reader ids rows by their index), checking each index comes once."""
    rows = [o for o in outputs if isinstance(o, Row)]
    by_index = {int(r.event_id): r for r in rows}
    assert len(by_index) == len(rows), "a row index twice"
    return by_index


@examples(1200)
@given(fs.avro_files().flatmap(fs.past_header_damage), st.integers(1, 4096))
def test_a_file_damaged_past_its_header_gives_rows_and_dead_letters_with_its_bytes(scratch, data,
                                                                                    bytes_per_range):
    """Any damage past the header, the file split into ranges anyhow: every output is a row with
    every interaction field (each file index once) or a dead letter whose payload is bytes of
    the file."""
    outputs = read_avro(data, scratch, bytes_per_range)
    for out in outputs:
        if isinstance(out, Row):
            assert set(out.fields) == INTERACTION_FIELDS
        else:
            assert out.payload and out.payload in data and out.source.endswith("fuzz.avro")
    rows_by_index(outputs)


@examples(300)
@given(fs.avro_files().flatmap(fs.header_damage))
@example(fs.with_long(fs.write_avro([fs.SIMULATED[:1]], "interaction", "null").data, 5, 2**62))
def test_a_damaged_header_is_refused_in_one_line_or_read(scratch, data):
    """A damaged header: ReadRows refuses the file at construction (UnreadableAvroFile, one
    line: no schema, codec or sync marker is left to read blocks with), or reads it into rows
    and dead letters."""
    read_avro(data, scratch)


@examples(600)
@given(fs.avro_files().flatmap(lambda f: st.tuples(st.just(f), fs.data_damage(f))))
def test_damage_inside_a_block_costs_that_block_at_most(scratch, damaged):
    """Bytes flipped inside one block's data: every other block's records come out as written,
    at their indexes; the damaged block gives its count of rows, or one dead letter holding
    exactly its bytes (count, size, data, sync)."""
    file, (number, data) = damaged
    outputs = read_avro(data, scratch)
    rows = rows_by_index(outputs)
    dead = [o for o in outputs if isinstance(o, DeadLetter)]
    for i, block in enumerate(file.blocks):
        indexes = range(block.first_row, block.first_row + block.count)
        if i == number and dead:
            assert [d.payload for d in dead] == [data[block.offset:block.end]]
            assert not set(indexes) & set(rows)
        elif i == number:
            assert set(indexes) <= set(rows)
        else:
            assert all(same_record(rows[j].fields, file.records[j]) for j in indexes)
    assert len(rows) == len(file.records) - (file.blocks[number].count if dead else 0)


def kept_or_dead_lettered(file: fs.AvroFile, outputs) -> bool:
    """Each written block's data bytes are inside a dead letter's payload, or its records come
    out next, in order, as rows: nothing silently lost."""
    rows = [fs.encode(o.fields, "interaction").data for o in outputs if isinstance(o, Row)]
    payloads = [o.payload for o in outputs if isinstance(o, DeadLetter)]
    for block in file.blocks:
        if any(file.data[block.data_at:block.end - fs.SYNC_SIZE] in p for p in payloads):
            continue
        written = [fs.encode(r, "interaction").data
                   for r in file.records[block.first_row:block.first_row + block.count]]
        at = next((i for i in range(len(rows)) if rows[i:i + len(written)] == written), None)
        if at is None:
            return False
        rows = rows[at + len(written):]
    return True


@examples(600)
@given(fs.avro_files().flatmap(lambda f: st.tuples(st.just(f), fs.framing_damage(f))))
def test_broken_block_framing_loses_no_record_silently(scratch, damaged):
    """A block's count or size replaced (huge, negative, off by one) or its sync marker
    damaged: the reader resynchronises, and every written record is a row or inside a dead
    letter's bytes."""
    file, data = damaged
    assert kept_or_dead_lettered(file, read_avro(data, scratch))


@examples(200)
@given(fs.avro_files(codecs=("deflate",)).filter(lambda f: len(f.blocks) > 1))
@example(fs.write_avro([fs.SIMULATED[:3], fs.SIMULATED[3:4], fs.SIMULATED[4:9]], "interaction", "deflate"))
def test_a_block_size_stretched_over_the_next_block_loses_no_record_silently(scratch, file):
    """The first block's size covers the next block too, so the framing checks out: the next
    block's records are rows or inside a dead letter's bytes."""
    assert kept_or_dead_lettered(file, read_avro(fs.stretched(file, 0), scratch))


@examples(100)
@given(fs.avro_files(schema="prediction"))
def test_a_file_of_another_schema_is_dead_letters_block_by_block(scratch, file):
    """A file of predictions read as interactions: no rows; each block a dead letter with its
    bytes."""
    outputs = read_avro(file.data, scratch)
    assert [o.payload for o in outputs] == [file.data[b.offset:b.end] for b in file.blocks]


@examples(200)
@given(fs.avro_files())
@example(fs.write_avro([[{**fs.SIMULATED[0], "event_time": 2**62}]], "interaction", "null"))
def test_rows_from_files_have_event_times_beam_can_carry(scratch, file):
    """A record whose event time Beam cannot carry as a timestamp is a dead letter, not a row."""
    assert all(within_beam_time(o) for o in read_avro(file.data, scratch) if isinstance(o, Row))


# --- JSON Lines ---------------------------------------------------------------------------------

def read_text(fmt: str, data: bytes, folder, timestamp_field=None, id_field=None) -> list:
    """ReadRows' DoFn for a text file holding `data`."""
    path = folder / f"fuzz.{fmt}"
    path.write_bytes(data)
    dofn = files._ReadFileDoFn(fmt, timestamp_field, id_field)
    dofn.setup()
    return [row_or_dead_letter(out, "ReadRows") for out in dofn.process(str(path))]


@examples(1200)
@given(fs.jsonl_files())
def test_each_jsonl_line_is_one_row_or_one_dead_letter_with_its_bytes(scratch, data):
    """Every non-blank line (lines end at \\n, \\r\\n or \\r) is, in order, one row whose fields
    are its JSON object, or one dead letter whose payload is exactly the line. (Event times
    out of range and nesting past the parser's recursion limit are left to the xfail tests
    below.)"""
    lines = [line for line in data.splitlines() if line.strip()]
    outputs = read_text("jsonl", data, scratch, timestamp_field="event_time", id_field="event_id")
    assert len(outputs) == len(lines)
    for line, out in zip(lines, outputs):
        if isinstance(out, Row):
            assert out.event_id == str(out.fields["event_id"]) and json.loads(line).keys() == out.fields.keys()
        else:
            assert out.payload == line


@examples(50)
@given(st.integers(1, 100_000))
@example(100_000)
def test_a_deeply_nested_jsonl_line_is_a_dead_letter(scratch, depth):
    """A line of `depth` nested arrays is a dead letter (not an object), however deep."""
    [out] = read_text("jsonl", fs.nested(depth), scratch, timestamp_field="event_time", id_field="event_id")
    assert out.payload == fs.nested(depth)


@examples(50)
@given(st.one_of(st.sampled_from(["1e400", "-1e400", "Infinity", "-Infinity", "1.8e305", "-1e308"]),
                 st.integers(MAX_EVENT_TIME_MS + 1, 2**70).map(str)))
@example("1e400")
@example("1.8e305")
def test_an_event_time_out_of_range_is_a_dead_letter_not_a_crash(scratch, event_time):
    """A line whose event time cannot be epoch milliseconds is a dead letter with the line."""
    line = b'{"event_id": "e1", "event_time": %s}' % event_time.encode()
    [out] = read_text("jsonl", line, scratch, timestamp_field="event_time", id_field="event_id")
    assert isinstance(out, DeadLetter) and out.payload == line


@examples(50)
@given(st.one_of(st.datetimes(max_value=fs.PANDAS_FIRST), st.datetimes(min_value=fs.PANDAS_LAST)))
@example(datetime.datetime(2263, 1, 1))
def test_an_iso_time_beyond_pandas_range_is_its_epoch_milliseconds(scratch, moment):
    """ISO-8601 times from year 1 to 9999 are rows, also where pandas' nanoseconds end."""
    line = b'{"event_id": "e1", "event_time": "%sZ"}' % moment.isoformat().encode()
    [out] = read_text("jsonl", line, scratch, timestamp_field="event_time", id_field="event_id")
    utc = moment.replace(tzinfo=datetime.timezone.utc)
    epoch = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
    assert isinstance(out, Row) and out.event_time == (utc - epoch) // datetime.timedelta(milliseconds=1)


# --- CSV ------------------------------------------------------------------------------------------

@examples(400)
@given(fs.csv_tables())
def test_each_csv_row_is_one_row(scratch, table):
    """Rows of any length up to the header's (ragged), cells with commas, quotes, newlines,
    NULs: each written row is one row, its missing cells empty."""
    outputs = read_text("csv", table.data, scratch)
    assert len(outputs) == len(table.rows) and all(isinstance(o, Row) for o in outputs)
    assert all(set(o.fields) == set(table.header) for o in outputs)


@examples(200)
@given(fs.csv_tables())
def test_well_formed_csv_rows_are_what_pandas_reads(scratch, table):
    """A well-formed file's rows are pandas' rows (python engine), value for value and type for
    type: the records are split first, but pandas still types them by column."""
    import io
    import pandas as pd
    expected = pd.read_csv(io.BytesIO(table.data), engine="python").to_dict("records")
    got = [o.fields for o in read_text("csv", table.data, scratch)]
    assert [list(r) for r in got] == [list(r) for r in expected]
    assert all(type(a) is type(b) and (a == b or a != a and b != b)
               for g, e in zip(got, expected) for a, b in zip(g.values(), e.values()))


@examples(300)
@given(fs.csv_tables(extra_cells=2))
@example(fs.CsvTable(["a"], [["x"], ["x", ""]], b"a\nx\nx,\n"))
@example(fs.CsvTable(["a", "b"], [["x", "1", "2"], ["y", "3", "4"]], b"a,b\nx,1,2\ny,3,4\n"))
def test_a_csv_row_with_too_many_cells_is_a_dead_letter(scratch, table):
    """Each written row is one row, or, when it has more cells than the header, one dead letter
    with a reason and the row's bytes as written. (pandas used to take a row with one cell more
    than the header as having an index column: rows merged or lost a cell.)"""
    outputs = read_text("csv", table.data, scratch)
    assert len(outputs) == len(table.rows)
    for row, out in zip(table.rows, outputs):
        assert isinstance(out, DeadLetter) == (len(row) > len(table.header))
        assert isinstance(out, Row) or (out.reason and out.payload == fs.csv_line(row))


@examples(300)
@given(fs.csv_tables().flatmap(lambda t: fs.mutated(t.data)))
@example(b"a,b\n1,\xff\n")
@example(b"")
@example(b" \n\n")
@example(b"\xff,a\n1,2\n")
@example(b'a,b\n1,2\n"3,4\n5,6\n')
@example(b'a\n"x\ny"z\n1\n')
@example(b'a\r1\r\n"2\n\r3"\r')
def test_csv_bytes_mutated_anyhow_give_rows_and_dead_letters(scratch, data):
    """Any bytes in a CSV file: rows and dead letters (with a reason and bytes), never a crash;
    each dead letter's bytes are in the file, and no two overlap. (pandas' errors on the whole
    file, invalid UTF-8 anywhere or an empty file, used to fail the job.)"""
    at = 0
    for out in read_text("csv", data, scratch):
        assert isinstance(out, Row) or (out.reason and (out.payload or not data.strip()))
        if isinstance(out, DeadLetter):
            at = data.index(out.payload, at) + len(out.payload)


def test_a_csv_quote_left_open_loses_no_row_silently(scratch):
    """Rows after an unbalanced quote: its line is a dead letter, the lines after it rows (it
    used to swallow the rest of the file)."""
    first, dead, last = read_text("csv", b'a,b\n1,2\n"3,4\n5,6\n', scratch)
    assert first.fields == {"a": 1, "b": 2} and dead.payload == b'"3,4' and last.fields == {"a": 5, "b": 6}


def test_a_malformed_csv_lines_dead_letter_holds_its_original_bytes(scratch):
    """A line with too many cells is a dead letter holding the line as it was (not its cells
    joined by commas: quotes were lost)."""
    [_, dead] = read_text("csv", b'a,b\n1,2\n"x,y",2,3\n', scratch)
    assert dead.payload == b'"x,y",2,3'


# --- one real pipeline ---------------------------------------------------------------------------

def test_mutated_inputs_through_real_pipelines(tmp_path):
    """The same decoders wired in pipelines: a few mutated inputs of each kind come out as rows
    and dead letters with their bytes (ReadRows on a JSONL and an Avro file, DecodeAvro on
    Kafka values: one output per value)."""
    valid = fs.encode(fs.SIMULATED[0], "interaction")
    values = [valid.data, fs.truncated(valid.data, 7), fs.flipped(valid.data, 1, 0x80), b"", None,
              fs.with_long(valid.data, valid.boundaries[3], 2**62), fs.encode(PREDICTION, "prediction").data]
    lines = [json.dumps(fs.SIMULATED[0]).encode(), b"\xff{", b"[1, 2]", b'{"event_id": "e"}']
    (tmp_path / "in.jsonl").write_bytes(b"\n".join(lines))
    file = fs.write_avro([fs.SIMULATED[:2], fs.SIMULATED[2:3], fs.SIMULATED[3:5]], "interaction", "snappy")
    damaged = fs.flipped(file.data, file.blocks[1].data_at + 1, 0xFF)
    (tmp_path / "in.avro").write_bytes(damaged)

    with TestPipeline() as p:
        jsonl = p | "Jsonl" >> files.ReadRows(str(tmp_path / "in.jsonl"), timestamp_field="event_time",
                                              id_field="event_id")
        avro = p | "Avro" >> files.ReadRows(str(tmp_path / "in.avro"), reader_schema=INTERACTION,
                                            timestamp_field="event_time", id_field="event_id")
        decoded = p | beam.Create([kafka_record(v) for v in values]) | kafka.DecodeAvro("interaction")
        for name, outputs, ids, payloads in [
                ("Jsonl", jsonl, [fs.SIMULATED[0]["event_id"]], lines[1:]),
                ("Avro", avro, [r["event_id"] for r in fs.SIMULATED[:2] + fs.SIMULATED[3:5]],
                 [damaged[file.blocks[1].offset:file.blocks[1].end]]),
                ("Kafka", decoded, [fs.SIMULATED[0]["event_id"]], [v or b"" for v in values[1:]])]:
            assert_that(outputs.rows | f"{name}Ids" >> beam.Map(lambda r: r.event_id), equal_to(ids),
                        label=f"{name}Rows")
            assert_that(outputs.dead_letters | f"{name}Payloads" >> beam.Map(lambda d: d.payload),
                        equal_to(payloads), label=f"{name}DeadLetters")
