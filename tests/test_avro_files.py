"""Avro container files from any writer (`core/avro.py`, `transforms/io/files.py` ReadRows):
every codec, Java's avro-tools as a foreign writer, logical timestamps, schema resolution
against the project's reader schema, unreadable files, partly corrupt files, and files split
into ranges of blocks."""
import datetime
import io
import json
import pathlib
import subprocess

import apache_beam as beam
import fastavro
import pytest
from apache_beam.testing.util import assert_that, equal_to

import schemas
import simulator
from core import avro
from core.decoding import avro_records, parse_event_time
from core.kafka import KafkaRecord, encode
from transforms.io.files import ReadRows
from transforms.io.kafka import DecodeAvro

ROOT = pathlib.Path(__file__).resolve().parent.parent
AVRO_TOOLS = subprocess.run(["bash", str(ROOT / "scripts" / "avro_tools.sh"), "path"],
                            capture_output=True, text=True, check=True).stdout.strip()
JAVA_CODECS = ("null", "deflate", "snappy", "zstandard", "bzip2", "xz")  # avro-tools fromjson --codec
INTERACTION = json.loads((ROOT / "schemas" / "interaction.avsc").read_text())
UNIONS = {"impression_id": "string", "position": "int", "device": "string", "watch_seconds": "double"}


def _foreign_schema(time_type: str) -> dict:
    """The interaction schema as another team might write it: other name and namespace, other
    field order, an extra field, no `device` field (the reader's default fills it in), and the
    event time as a logical timestamp."""
    fields = {f["name"]: f for f in INTERACTION["fields"] if f["name"] != "device"}
    fields["event_time"] = {"name": "event_time", "type": {"type": "long", "logicalType": time_type}}
    return {"type": "record", "name": "UserInteraction", "namespace": "com.example.events",
            "fields": [*reversed(fields.values()), {"name": "ingest_host", "type": "string"}]}


@pytest.fixture(scope="session")
def interactions():
    """Simulated interactions (some malformed, all schema-valid), without devices so that a
    writer schema without the field gives the same records."""
    return [{**r, "device": None}
            for r in simulator.generate(simulator.SimulatorConfig(impressions=1000, users=50, seed=5))]


@pytest.fixture(scope="session")
def java_files(tmp_path_factory, interactions):
    """name -> path of Avro files written by Java's avro-tools: the project's schema with every
    codec, and the foreign schema with timestamp-millis and timestamp-micros (snappy)."""
    folder = tmp_path_factory.mktemp("java")
    if not pathlib.Path(AVRO_TOOLS).is_file():
        pytest.fail(f"{AVRO_TOOLS} is missing: set-up fetches it (bash scripts/avro_tools.sh)")

    def write(name, schema, records, codec):
        (folder / f"{name}.avsc").write_text(json.dumps(schema))
        (folder / f"{name}.json").write_text("".join(json.dumps(_avro_json(r)) + "\n" for r in records))
        with open(folder / f"{name}.avro", "wb") as out:
            level = ["--level", "6"] if codec == "xz" else []  # avro-tools' default level -1 is no xz preset
            subprocess.run(["java", "-jar", AVRO_TOOLS, "fromjson", "--codec", codec, *level, "--schema-file",
                            str(folder / f"{name}.avsc"), str(folder / f"{name}.json")],
                           stdout=out, stderr=subprocess.PIPE, check=True)
        return str(folder / f"{name}.avro")

    files = {codec: write(codec, INTERACTION, interactions, codec) for codec in JAVA_CODECS}
    for unit, scale in (("millis", 1), ("micros", 1000)):
        foreign = [{**{k: v for k, v in r.items() if k != "device"}, "event_time": r["event_time"] * scale,
                    "ingest_host": "etl-7"} for r in interactions]
        files[f"timestamp-{unit}"] = write(f"timestamp-{unit}", _foreign_schema(f"timestamp-{unit}"), foreign,
                                           "snappy")
    return files


def _avro_json(record: dict) -> dict:
    """A record in Avro's JSON encoding (what avro-tools reads): union values name their branch."""
    return {k: ({UNIONS[k]: v} if k in UNIONS and v is not None else v) for k, v in record.items()}


def _fastavro_file(path, records, schema=INTERACTION, **options) -> str:
    with open(path, "wb") as f:
        fastavro.writer(f, fastavro.parse_schema(schema), records, **options)
    return str(path)


def _row_tuples(rows):
    return [(r.event_id, r.event_time, json.dumps(r.fields, sort_keys=True, default=str)) for r in rows]


def _read(paths: dict, tmp_path, **options) -> tuple[dict, dict]:
    """name -> rows (as sorted tuples) and name -> dead letters (reason, payload) of each file,
    read by ReadRows in one pipeline."""
    def keep(items, name):
        (tmp_path / f"{name}.json").write_text(json.dumps(items))

    with beam.Pipeline() as p:
        for name, path in paths.items():
            source = p | f"Read{name}" >> ReadRows(path, "avro", **options)
            (source.rows | f"Rows{name}" >> beam.combiners.ToList()
             | f"KeepRows{name}" >> beam.Map(lambda rows, n=name: keep(_row_tuples(rows), f"rows-{n}")))
            (source.dead_letters | f"Dead{name}" >> beam.combiners.ToList()
             | f"KeepDead{name}" >> beam.Map(
                 lambda dead, n=name: keep([(d.reason, d.payload.hex()) for d in dead], f"dead-{n}")))
    rows = {n: sorted(map(tuple, json.loads((tmp_path / f"rows-{n}.json").read_text()))) for n in paths}
    dead = {n: [(reason, bytes.fromhex(payload)) for reason, payload in
                json.loads((tmp_path / f"dead-{n}.json").read_text())] for n in paths}
    return rows, dead


def test_java_files_of_every_codec_and_foreign_schemas_read_like_a_fastavro_file(tmp_path, interactions,
                                                                                 java_files):
    reference = _fastavro_file(tmp_path / "fastavro.avro", interactions)
    keyed = dict(timestamp_field="event_time", id_field="event_id", reader_schema=schemas.load("interaction"))
    rows, dead = _read({"fastavro": reference, **{n.replace("-", "_"): p for n, p in java_files.items()}},
                       tmp_path, bytes_per_range=20_000, **keyed)
    assert len(rows["fastavro"]) == len(interactions) and not dead["fastavro"]
    for name in java_files:
        name = name.replace("-", "_")
        assert rows[name] == rows["fastavro"], name
        assert not dead[name], name
    assert {avro_records(path) for path in java_files.values()} == {len(interactions)}


def test_without_a_reader_schema_rows_keep_the_writers_fields_and_file_indexes(tmp_path, java_files):
    rows, _ = _read({"millis": java_files["timestamp-millis"]}, tmp_path, bytes_per_range=20_000)
    with open(java_files["timestamp-millis"], "rb") as f:
        records = list(fastavro.reader(f))
    assert [(int(event_id), event_time) for event_id, event_time, _ in rows["millis"]] == \
        [(i, i * 1000) for i in range(len(records))]  # event time = row index in seconds, as before
    assert [json.loads(fields)["ingest_host"] for _, _, fields in rows["millis"]] == ["etl-7"] * len(records)


def test_files_split_into_ranges_of_whole_blocks(tmp_path, interactions):
    path = _fastavro_file(tmp_path / "small-blocks.avro", interactions, sync_interval=2_000)
    with open(path, "rb") as f:
        header = avro.read_header(f, path)
        ranges = avro.split(f, header, 10_000)
        by_range = [list(avro.records(f, header, span)) for span in ranges]
    assert len(ranges) > 5
    assert [index for part in by_range for index, *_ in part] == list(range(len(interactions)))
    assert [fields for part in by_range for _, fields, _, _ in part] == interactions


def test_event_times_from_datetimes_and_a_clear_error_without_a_date():
    utc = datetime.timezone.utc
    assert parse_event_time(datetime.datetime(2026, 1, 1, tzinfo=utc)) == 1_767_225_600_000
    assert parse_event_time(datetime.datetime(2026, 1, 1)) == 1_767_225_600_000  # naive: UTC
    assert parse_event_time(datetime.datetime(1969, 12, 31, 23, 59, 59, 999_999, tzinfo=utc)) == -1
    with pytest.raises(ValueError, match="time of day without a date"):
        parse_event_time(datetime.time(8, 15))


def test_kafka_payloads_with_a_logical_timestamp_decode_as_epoch_ms(interactions):
    """A producer whose schema has event_time as timestamp-millis writes the same bytes."""
    millis = {**INTERACTION, "fields": [
        {**f, "type": {"type": "long", "logicalType": "timestamp-millis"}} if f["name"] == "event_time" else f
        for f in INTERACTION["fields"]]}
    record = interactions[0]
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(millis), {
        **record, "event_time": datetime.datetime.fromtimestamp(record["event_time"] / 1000, datetime.timezone.utc)})
    assert buffer.getvalue() == encode(record, "interaction")
    with beam.Pipeline() as p:
        rows = (p | beam.Create([KafkaRecord("t", 0, 0, None, buffer.getvalue(), record["event_time"])])
                | DecodeAvro("interaction")).rows
        assert_that(rows | beam.Map(lambda r: (r.event_id, r.event_time, r.fields)),
                    equal_to([(record["event_id"], record["event_time"], record)]))


def _header_bytes(path) -> bytes:
    with open(path, "rb") as f:
        end = avro.read_header(f, path).data_start
        return f.seek(0) or f.read(end)


@pytest.mark.parametrize("damage,reason", [
    (lambda data, header: b"PAR1" + data[4:], "not an Avro container file"),
    (lambda data, header: data[:len(header) // 2], "truncated or broken Avro header"),
    (lambda data, header: data.replace(b"\x08null", b"\x08brot", 1), "codec 'brot'"),
])
def test_unreadable_files_fail_at_construction_in_one_line(tmp_path, interactions, damage, reason):
    good = _fastavro_file(tmp_path / "good.avro", interactions[:10], codec="null")
    bad = tmp_path / "bad.avro"
    bad.write_bytes(damage(open(good, "rb").read(), _header_bytes(good)))
    for attempt in (lambda: ReadRows(str(bad), "avro"), lambda: avro_records(str(bad))):
        with pytest.raises(avro.UnreadableAvroFile, match=reason) as error:
            attempt()
        assert isinstance(error.value, ValueError) and str(bad) in str(error.value)
        assert "\n" not in str(error.value)


def _blocks(path):
    with open(path, "rb") as f:
        return [(b.offset, b.offset + b.size, b.num_records) for b in fastavro.block_reader(f)]


@pytest.mark.parametrize("codec,where", [
    ("snappy", "data"),      # bad compressed bytes (snappy's CRC catches them)
    ("deflate", "size"),     # a broken block size: resynchronised on the next sync marker
    ("null", "sync"),        # a broken sync marker after the block
    ("deflate", "tail"),     # a torn last block
])
def test_a_partly_corrupt_file_keeps_every_readable_block(tmp_path, interactions, codec, where):
    path = _fastavro_file(tmp_path / "clean.avro", interactions, codec=codec, sync_interval=4_000)
    blocks = _blocks(path)
    data = bytearray(open(path, "rb").read())
    bad = len(blocks) - 1 if where == "tail" else len(blocks) // 2
    start, end, _ = blocks[bad]
    if where == "data":
        data[(start + end) // 2] ^= 0xFF
    elif where == "size":
        data[start + 2:start + 4] = b"\xff\x7f"
    elif where == "sync":
        data[end - 3] ^= 0xFF
        end = blocks[bad + 1][1]  # the marker that ends this block is gone: the next one's ends both
    else:
        data = data[:end - 5]
        end = len(data)
    (tmp_path / "damaged.avro").write_bytes(bytes(data))
    first_lost, lost = sum(n for s, _, n in blocks if s < start), sum(n for s, _, n in blocks if start <= s < end)
    kept = interactions[:first_lost] + interactions[first_lost + lost:]
    rows, dead = _read({"damaged": str(tmp_path / "damaged.avro")}, tmp_path, timestamp_field="event_time",
                       id_field="event_id", bytes_per_range=6_000)
    assert len(rows["damaged"]) == len(interactions) - lost
    assert sorted(json.loads(fields)["event_id"] for *_, fields in rows["damaged"]) == \
        sorted(r["event_id"] for r in kept)
    [(reason, payload)] = dead["damaged"]
    assert payload == bytes(data[start:end])
    assert reason.startswith(f"Avro block {bad} at byte {start} ")
