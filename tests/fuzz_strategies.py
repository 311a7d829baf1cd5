"""Hypothesis strategies for fuzzing the decoders (tests/test_fuzz.py): valid encodings of the
project's records, then mutations of them that reach past any header.

- Schemaless Avro (Kafka values): `kafka_values` — valid encodings of a schema (random records
  drawn from the schema itself, and the simulator's records), mutated by truncation, flipped
  bytes, inserted and deleted bytes, a huge or negative long crafted at a field boundary (a
  string's length, an array's block count, a union's branch, an enum's index, a long field),
  valid records of another schema, random bytes, the empty value.
- Avro container files: `avro_files` (fastavro writes them, several blocks, every codec it
  can) and their damage: `data_damage` (bytes of one block's data), `framing_damage` (a
  block's count, its size, its sync marker), `past_header_damage` (anything after the
  header), `header_damage`.
- JSON Lines: `jsonl_files` — valid lines, mutated lines, invalid UTF-8, non-object JSON, huge
  numbers, nesting, blank lines.
- CSV: `csv_tables` (ragged rows, quoted commas, quotes and newlines, embedded NULs) and
  `mutated` bytes of them.
- Confluent wire format (magic byte 0, 4-byte big-endian schema id, schemaless Avro):
  `wire_values`.

The mutations are plain functions too (`truncated`, `flipped`, `inserted`, `deleted`,
`with_long`), so a test can state a reproducer with them.
"""
from __future__ import annotations

import csv
import dataclasses
import datetime
import io
import json

import fastavro
from hypothesis import strategies as st

import schemas
import simulator

SCHEMAS = ("interaction", "prediction", "metric", "dead_letter")
CODECS = ("null", "deflate", "snappy", "zstandard", "bzip2", "xz")  # all fastavro writes here
SYNC_SIZE = 16
EXTREME_LONGS = st.sampled_from([2**62, 2**63 - 1, -(2**63), -(2**62), 2**31, -1])
HUGE_LONGS = st.one_of(EXTREME_LONGS, st.integers(-(2**63), 2**63 - 1))
SIMULATED = [dict(r) for r in simulator.generate(simulator.SimulatorConfig(impressions=150, users=15, seed=11))]


# --- mutations -------------------------------------------------------------------------------

def zigzag(value: int) -> bytes:
    """An Avro long: zig-zag varint (`zigzag(2**62)` is a length no input can hold)."""
    n, out = (value << 1) ^ (value >> 63), bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def truncated(data: bytes, at: int) -> bytes:
    return data[:at]


def flipped(data: bytes, at: int, mask: int) -> bytes:
    return data[:at] + bytes([data[at] ^ mask]) + data[at + 1:]


def inserted(data: bytes, at: int, extra: bytes) -> bytes:
    return data[:at] + extra + data[at:]


def deleted(data: bytes, at: int, length: int) -> bytes:
    return data[:at] + data[at + length:]


def with_long(data: bytes, at: int, value: int) -> bytes:
    """`data` with the varint starting at byte `at` replaced by the Avro long `value`."""
    end = at
    while end < len(data) and data[end] & 0x80:
        end += 1
    return data[:at] + zigzag(value) + data[min(end + 1, len(data)):]


@st.composite
def byte_mutation(draw, data: bytes) -> bytes:
    """One truncation, flipped byte, insertion or deletion anywhere in `data`."""
    kinds = ["truncate", "insert"] + (["flip", "delete"] if data else [])
    kind = draw(st.sampled_from(kinds))
    if kind == "truncate":
        return truncated(data, draw(st.integers(0, len(data))))
    if kind == "insert":
        return inserted(data, draw(st.integers(0, len(data))), draw(st.binary(min_size=1, max_size=8)))
    at = draw(st.integers(0, len(data) - 1))
    if kind == "flip":
        return flipped(data, at, draw(st.integers(1, 255)))
    return deleted(data, at, draw(st.integers(1, 8)))


@st.composite
def mutated(draw, data: bytes, boundaries: tuple = ()) -> bytes:
    """`data` changed at least once: maybe a huge long at one of `boundaries` (offsets where an
    encoded value starts), then up to three byte mutations."""
    if boundaries and draw(st.booleans()):
        data = with_long(data, draw(st.sampled_from(boundaries)), draw(HUGE_LONGS))
        least = 0
    else:
        least = 1
    for _ in range(draw(st.integers(least, 3))):
        data = draw(byte_mutation(data))
    return data


# --- schemaless Avro (Kafka values) -----------------------------------------------------------

_PRIMITIVES = {
    "null": st.none(),
    "boolean": st.booleans(),
    "int": st.integers(-(2**31), 2**31 - 1),
    "long": st.integers(0, 2**42),  # times in range (out of range: the event-time tests below)
    "float": st.floats(width=32),
    "double": st.floats(),
    "bytes": st.binary(max_size=12),
    "string": st.text(max_size=12),
}


def avro_values(schema) -> st.SearchStrategy:
    """Values valid for a parsed Avro schema (records, enums, arrays, maps, unions, fixed)."""
    if isinstance(schema, list):
        return st.one_of([avro_values(branch) for branch in schema])
    if isinstance(schema, str):
        return _PRIMITIVES[schema]
    kind = schema["type"]
    if kind == "record":
        return st.fixed_dictionaries({f["name"]: avro_values(f["type"]) for f in schema["fields"]})
    if kind == "enum":
        return st.sampled_from(schema["symbols"])
    if kind == "array":
        return st.lists(avro_values(schema["items"]), max_size=4)
    if kind == "map":
        return st.dictionaries(st.text(max_size=6), avro_values(schema["values"]), max_size=4)
    if kind == "fixed":
        return st.binary(min_size=schema["size"], max_size=schema["size"])
    return avro_values(kind)  # a primitive written as {"type": ...}, maybe with a logical type


def records(schema: str) -> st.SearchStrategy:
    """Records of a project schema; for interactions, the simulator's records too."""
    drawn = avro_values(schemas.load(schema))
    return st.one_of(st.sampled_from(SIMULATED), drawn) if schema == "interaction" else drawn


@dataclasses.dataclass(frozen=True)
class Encoded:
    """A record's schemaless Avro bytes and the offsets where each of its fields starts."""

    record: dict
    data: bytes
    boundaries: tuple


def encode(record: dict, schema: str) -> Encoded:
    parts = []
    for field in schemas.load(schema)["fields"]:
        buffer = io.BytesIO()
        fastavro.schemaless_writer(buffer, field["type"], record[field["name"]])
        parts.append(buffer.getvalue())
    starts = tuple(sum(len(p) for p in parts[:i]) for i in range(len(parts)))
    return Encoded(record, b"".join(parts), starts)


def encodings(schema: str) -> st.SearchStrategy:
    return records(schema).map(lambda r: encode(r, schema))


def kafka_values(schema: str = "interaction") -> st.SearchStrategy:
    """Kafka values for a decoder of `schema`: valid, mutated, another schema's, random, empty."""
    others = [s for s in SCHEMAS if s != schema]
    return st.one_of(
        encodings(schema).map(lambda e: e.data),
        encodings(schema).flatmap(lambda e: mutated(e.data, e.boundaries)),
        st.sampled_from(others).flatmap(lambda s: encodings(s).map(lambda e: e.data)),
        st.binary(max_size=64),
        st.just(b""),
    )


# --- Confluent wire format -----------------------------------------------------------------

def wire_values(known_ids: dict, schema: str = "interaction") -> st.SearchStrategy:
    """Wire-format values for a decoder that knows `known_ids` (schema id -> schema name):
    valid framing of a known id (its body valid or mutated), valid framing with an unknown id,
    a body of another schema under a known id, a wrong magic byte, a header cut short."""
    def framed(schema_id: int, body: bytes) -> bytes:
        return b"\x00" + schema_id.to_bytes(4, "big") + body

    ids = st.sampled_from(sorted(known_ids))
    unknown = st.integers(0, 2**32 - 1).filter(lambda i: i not in known_ids)
    body = kafka_values(schema)
    return st.one_of(
        st.builds(framed, ids, body),
        st.builds(framed, unknown, encodings(schema).map(lambda e: e.data)),
        st.builds(lambda magic, rest: bytes([magic]) + rest, st.integers(1, 255),
                  st.builds(framed, ids, body).map(lambda v: v[1:])),
        st.builds(framed, ids, body).flatmap(lambda v: st.integers(0, 4).map(lambda n: v[:n])),
    )


# --- Avro container files -------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class BlockSpan:
    """A block as written: bytes [offset, end) (count, size, data, sync), its `count` records
    from file index `first_row`, and where its size and data start."""

    offset: int
    end: int
    count: int
    first_row: int
    size_at: int
    data_at: int


@dataclasses.dataclass(frozen=True)
class AvroFile:
    data: bytes
    codec: str
    records: list
    blocks: tuple
    header_end: int


def write_avro(records_by_block: list, schema: str, codec: str) -> AvroFile:
    """A container file with one block per list of records, and where each block lies."""
    buffer = io.BytesIO()
    writer = fastavro.write.Writer(buffer, schemas.load(schema), codec=codec, sync_interval=1 << 30)
    header_end, spans, first_row = buffer.tell(), [], 0
    for block in records_by_block:
        offset = buffer.tell()
        for record in block:
            writer.write(record)
        writer.flush()
        size_at = offset + len(zigzag(len(block)))
        data_at = size_at + _varint_length(buffer.tell() - SYNC_SIZE - size_at)
        spans.append(BlockSpan(offset, buffer.tell(), len(block), first_row, size_at, data_at))
        first_row += len(block)
    return AvroFile(buffer.getvalue(), codec, [r for b in records_by_block for r in b], tuple(spans), header_end)


def _varint_length(total: int) -> int:
    """The length of the size varint of a block whose size varint and data take `total` bytes."""
    return next(n for n in range(1, 11) if len(zigzag(total - n)) == n)


def file_records(schema: str) -> st.SearchStrategy:
    """Records for files: for interactions, three in four from the simulator (cheap to draw;
    file damage is about framing more than values), else `records`."""
    if schema != "interaction":
        return records(schema)
    simulated = st.sampled_from(SIMULATED)
    return st.one_of(simulated, simulated, simulated, records(schema))


@st.composite
def avro_files(draw, schema: str = "interaction", codecs=CODECS) -> AvroFile:
    """A container file of 1-4 non-empty blocks of 1-3 records each, in one of `codecs`."""
    blocks = draw(st.lists(st.lists(file_records(schema), min_size=1, max_size=3), min_size=1, max_size=4))
    return write_avro(blocks, schema, draw(st.sampled_from(codecs)))


@st.composite
def data_damage(draw, file: AvroFile):
    """(index of the damaged block, the file with 1-3 bytes of that block's data flipped):
    framing intact."""
    number = draw(st.integers(0, len(file.blocks) - 1))
    block = file.blocks[number]
    data = file.data
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(block.data_at, block.end - SYNC_SIZE - 1))
        data = flipped(data, at, draw(st.integers(1, 255)))
    return number, data


@st.composite
def framing_damage(draw, file: AvroFile) -> bytes:
    """The file with one block's framing broken: its count or size replaced (huge, negative,
    one off), or a byte of its sync marker flipped."""
    block = draw(st.sampled_from(file.blocks))
    kind = draw(st.sampled_from(["count", "size", "sync"]))
    if kind == "count":
        value = draw(st.one_of(HUGE_LONGS, st.sampled_from([0, block.count - 1, block.count + 1])))
        return with_long(file.data, block.offset, value)
    if kind == "size":
        size = block.end - SYNC_SIZE - block.data_at
        # Not any size: one that ends exactly at a later block's end is `stretched` (a known bug).
        value = draw(st.one_of(EXTREME_LONGS, st.sampled_from([0, size - 1, size + 1])))
        return with_long(file.data, block.size_at, value)
    return flipped(file.data, draw(st.integers(block.end - SYNC_SIZE, block.end - 1)), draw(st.integers(1, 255)))


def stretched(file: AvroFile, number: int) -> bytes:
    """The file with block `number`'s size covering the next block too (its data, count, size,
    data), so that the size ends right at a valid sync marker: a framing that checks out.
    Unchanged when `number` is the last block."""
    if number + 1 >= len(file.blocks):
        return file.data
    block, following = file.blocks[number], file.blocks[number + 1]
    size = following.end - SYNC_SIZE - block.size_at
    size -= _varint_length(size)
    return file.data[:block.size_at] + zigzag(size) + file.data[block.data_at:]


@st.composite
def past_header_damage(draw, file: AvroFile) -> bytes:
    """The file mutated anywhere past its header: byte mutations, and huge longs at block
    counts and sizes."""
    boundaries = tuple(b.offset - file.header_end for b in file.blocks) + tuple(
        b.size_at - file.header_end for b in file.blocks)
    return file.data[:file.header_end] + draw(mutated(file.data[file.header_end:], boundaries))


@st.composite
def header_damage(draw, file: AvroFile) -> bytes:
    """The file with its header mutated (magic, metadata and its lengths, sync marker)."""
    boundaries = (4, 5)  # the metadata's entry count, its first key's length
    return draw(mutated(file.data[:file.header_end], boundaries)) + file.data[file.header_end:]


# --- JSON Lines -------------------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(10**30), 10**30), st.floats(allow_infinity=False),
              st.text(max_size=10)),
    lambda children: st.one_of(st.lists(children, max_size=3), st.dictionaries(st.text(max_size=5), children,
                                                                                  max_size=3)),
    max_leaves=8)
PANDAS_FIRST, PANDAS_LAST = datetime.datetime(1677, 9, 22), datetime.datetime(2262, 4, 11)
# Event times as files hold them, right or wrong; never infinite, no float past 1e300 and no ISO
# date outside pandas' range (known bugs: the xfail
# test_fuzz.test_an_event_time_out_of_range_is_a_dead_letter_not_a_crash).
EVENT_TIMES = st.one_of(
    st.integers(0, 2**42), st.integers(-(10**30), 10**30), st.floats(-1e300, 1e300), st.just(float("nan")),
    st.datetimes(PANDAS_FIRST, PANDAS_LAST).map(lambda d: d.isoformat() + "Z"), st.text(max_size=12), st.none(),
    st.booleans(), JSON_VALUES)


def _json_line(value) -> bytes:
    return json.dumps(value).encode()


def nested(depth: int) -> bytes:
    """A JSON line of `depth` nested arrays."""
    return b"[" * depth + b"]" * depth


JSONL_LINES = st.one_of(
    st.sampled_from(SIMULATED).map(_json_line),
    st.fixed_dictionaries({"event_id": st.one_of(st.text(max_size=8), JSON_VALUES), "event_time": EVENT_TIMES},
                          optional={"x": JSON_VALUES}).map(_json_line),
    st.sampled_from(SIMULATED).map(_json_line).flatmap(mutated),
    JSON_VALUES.map(_json_line),  # mostly not objects
    st.integers(1, 200).map(nested),  # deeper than the parser's recursion limit: a known bug (xfail)
    st.sampled_from([b"\xff\xfe{}", b'{"event_id": "\xc3\x28"}', b"\xed\xa0\x80"]),  # invalid UTF-8
    st.sampled_from([b"", b"  ", b"\t", b"\r"]),  # blank
)


def jsonl_files() -> st.SearchStrategy:
    return st.lists(JSONL_LINES, max_size=8).map(b"\n".join)


# --- CSV --------------------------------------------------------------------------------------

CELLS = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=8)
CSV_TRICKS = st.sampled_from(['a,b', '"q"', '"', ' "q', 'line\nbreak', 'cr\rlf\r\n', '\r', 'nul\x00byte', ' ',
                              '\ufeff', '1e400', '0.1000000000000001', '-0', '007', 'NaN', ''])


@dataclasses.dataclass(frozen=True)
class CsvTable:
    header: list
    rows: list
    data: bytes


@st.composite
def csv_tables(draw, extra_cells: int = 0) -> CsvTable:
    """A CSV file as csv.writer writes it: a header of 1-4 columns, then 0-6 rows of 1 to
    header + `extra_cells` cells (ragged), cells with commas, quotes, newlines and NULs; each
    row's first cell holds a letter, so no row is blank."""
    header = draw(st.lists(st.sampled_from("abcdef"), min_size=1, max_size=4, unique=True))
    first = st.builds(lambda c, rest: c + rest, st.sampled_from("xyz"), st.one_of(CELLS, CSV_TRICKS))
    row = st.integers(1, len(header) + extra_cells).flatmap(
        lambda n: st.tuples(first, st.lists(st.one_of(CELLS, CSV_TRICKS), min_size=n - 1, max_size=n - 1)))
    rows = [[head, *rest] for head, rest in draw(st.lists(row, max_size=6))]
    text = io.StringIO()
    csv.writer(text).writerows([header, *rows])
    return CsvTable(header, rows, text.getvalue().encode())


def csv_line(row: list) -> bytes:
    """A row as csv.writer writes it, without its line end."""
    text = io.StringIO()
    csv.writer(text).writerow(row)
    return text.getvalue().removesuffix("\r\n").encode()
