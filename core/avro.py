"""Avro object container files from any writer, read block by block without Beam.

A container file is a header (magic, metadata with the writer's schema and codec, a 16-byte
sync marker) followed by blocks: a record count, a byte size, the records (compressed by the
codec) and the sync marker again. Reading block by block lets a reader keep every block it
can decode and set aside the ones it cannot, and lets a job split a file on block boundaries:

- `read_header(f, name)`: the header, or `UnreadableAvroFile` when the file cannot be read at
  all (not Avro, truncated header, a codec this installation cannot decompress);
- `blocks(f, header)`: a cheap walk over block headers (no decompression): each `Block` with
  its number and the index of its first row in the file, or a `Damaged` span where the
  framing is broken, after which the walk resynchronises on the next sync marker;
- `split(f, header, bytes_per_range)`: `Range`s of whole blocks, each knowing its first row;
- `records(f, header, span, reader_schema)`: `(index, fields, error, raw)` per record, as
  `core.decoding.records` gives them, or per block that does not decode (its bytes in `raw`);
  fields are resolved against an optional reader schema (extra writer fields dropped, missing
  ones defaulted, any order, the writer's record accepted whatever its name and namespace).

>>> import io, fastavro
>>> schema = {"type": "record", "name": "r", "fields": [{"name": "a", "type": "int"}]}
>>> f = io.BytesIO()
>>> fastavro.writer(f, schema, [{"a": 1}, {"a": 2}], codec="deflate")
>>> header = read_header(f, "r.avro")
>>> header.codec, [(b.number, b.count, b.first_row) for b in blocks(f, header)]
('deflate', [(0, 2, 0)])
>>> list(records(f, header))
[(0, {'a': 1}, None, None), (1, {'a': 2}, None, None)]
>>> _ = f.truncate(f.seek(-3, io.SEEK_END))  # a torn tail
>>> [(index, error) for index, _, error, _ in records(f, header)]
[(-1, 'Avro block 0 at byte 128 (22 bytes): impossible block header (count 2, size 7)')]
"""
from __future__ import annotations

import bz2
import dataclasses
import importlib
import io
import json
import lzma
import zlib
from typing import Iterator

import fastavro
from fastavro.schema import SchemaParseException

MAGIC = b"Obj\x01"
SYNC_SIZE = 16
SCAN_BYTES = 1 << 16  # read size while looking for the next sync marker after damage


class UnreadableAvroFile(ValueError):
    """A file that is not a readable Avro container at all: a one-line reason naming it."""


def _deflate(data: bytes) -> bytes:
    """Raw deflate of exactly one stream: zlib ignores bytes after its end, as a block size
    stretched over the next block leaves (fastavro leaves 3 bytes of zlib checksum: allow 4)."""
    stream = zlib.decompressobj(-15)
    out = stream.decompress(data)
    if not stream.eof or len(stream.unused_data) > 4:
        raise ValueError(f"deflate data {'ends early' if not stream.eof else 'runs past its stream'}")
    return out


def _snappy(data: bytes) -> bytes:
    from cramjam import snappy  # imported when a snappy file comes (read_header checks it is there)

    body, crc = data[:-4], int.from_bytes(data[-4:], "big")
    out = bytes(snappy.decompress_raw(body))
    if zlib.crc32(out) != crc:  # Avro's snappy blocks carry the CRC32 of the raw bytes
        raise ValueError("snappy block fails its CRC32 check")
    return out


def _zstandard(data: bytes) -> bytes:
    from backports import zstd  # as fastavro does before Python 3.14 (compression.zstd)

    return zstd.decompress(data)


CODECS = {
    "null": bytes,
    "deflate": _deflate,
    "bzip2": bz2.decompress,
    "xz": lzma.decompress,
    "snappy": _snappy,
    "zstandard": _zstandard,
}
_CODEC_LIBRARIES = {"snappy": "cramjam", "zstandard": "backports.zstd"}


@dataclasses.dataclass(frozen=True)
class Header:
    """What a container file's blocks need: the writer's schema (parsed), codec, sync marker;
    `data_start` is the offset of the first block."""

    schema: dict
    codec: str
    sync: bytes
    data_start: int


@dataclasses.dataclass(frozen=True)
class Block:
    """The `number`th well-framed block: `count` records in bytes [offset, end) (count, size,
    data, sync); `first_row` is the file index of its first record."""

    number: int
    offset: int
    end: int
    count: int
    first_row: int


@dataclasses.dataclass(frozen=True)
class Damaged:
    """Bytes [offset, end) that are no well-framed block, counted as block `number`;
    `first_row` is the index the next block's first record gets."""

    number: int
    offset: int
    end: int
    reason: str
    first_row: int


@dataclasses.dataclass(frozen=True)
class Range:
    """The blocks starting in bytes [start, end) of a file, on block boundaries, and the
    number and first row index of its first block."""

    start: int
    end: int
    first_block: int
    first_row: int


def read_header(f, name: str) -> Header:
    """The header of the container file open as `f` (seekable, binary); `name` is for errors."""
    f.seek(0)
    if f.read(len(MAGIC)) != MAGIC:
        raise UnreadableAvroFile(f"{name} is not an Avro container file (no 'Obj\\x01' magic)")
    try:
        meta = dict(_map_entries(f))
        sync = _read_exact(f, SYNC_SIZE)
        schema = fastavro.parse_schema(json.loads(meta["avro.schema"]))
        codec = meta.get("avro.codec", b"null").decode()
    except (EOFError, KeyError, ValueError, SchemaParseException) as e:
        raise UnreadableAvroFile(f"{name} has a truncated or broken Avro header ({e})") from e
    if codec not in CODECS:
        raise UnreadableAvroFile(f"{name} uses the Avro codec {codec!r}, which streamml cannot read "
                                 f"(it reads {', '.join(CODECS)})")
    if codec in _CODEC_LIBRARIES:
        try:
            importlib.import_module(_CODEC_LIBRARIES[codec])
        except ImportError as e:
            raise UnreadableAvroFile(f"{name} uses the Avro codec {codec!r}: pip install "
                                     f"{_CODEC_LIBRARIES[codec]} to read it") from e
    return Header(schema, codec, sync, f.tell())


def blocks(f, header: Header, span: Range | None = None) -> Iterator[Block | Damaged]:
    """The blocks (or damaged spans) of the file open as `f`, or of `span` of it: reads only
    block headers and seeks past the data."""
    size = f.seek(0, io.SEEK_END)
    span = span or Range(header.data_start, size, 0, 0)
    position, number, first_row = span.start, span.first_block, span.first_row
    while position < min(span.end, size):
        f.seek(position)
        try:
            count, length = _read_long(f), _read_long(f)
            if count < 0 or length < 0 or f.tell() + length + SYNC_SIZE > size:
                raise ValueError(f"impossible block header (count {count}, size {length})")
            f.seek(length, io.SEEK_CUR)
            if f.read(SYNC_SIZE) != header.sync:
                raise ValueError("no sync marker where the block size says")
        except (EOFError, ValueError) as e:
            resumed = _next_sync_end(f, header.sync, position + 1, size)
            yield Damaged(number, position, resumed, str(e), first_row)
            position, number = resumed, number + 1
            continue
        end = f.tell()
        yield Block(number, position, end, count, first_row)  # (the caller may move `f`)
        position, number, first_row = end, number + 1, first_row + count


def split(f, header: Header, bytes_per_range: int) -> list[Range]:
    """The file's blocks in `Range`s of at least `bytes_per_range` bytes (the last one less)."""
    ranges, current = [], None
    for block in blocks(f, header):
        current = (Range(block.offset, block.end, block.number, block.first_row) if current is None
                   else dataclasses.replace(current, end=block.end))
        if current.end - current.start >= bytes_per_range:
            ranges.append(current)
            current = None
    return ranges + ([current] if current else [])


def records(f, header: Header, span: Range | None = None, reader_schema: dict | None = None):
    """`(index, fields, None, None)` for each record of the blocks (of `span`) that decode, and
    `(-1, None, reason, raw)` for each block that does not (bad compressed data, bad record
    bytes, broken framing), with the block's bytes: a block is all or nothing."""
    reader = _as_reader_of(reader_schema, header.schema)
    for block in blocks(f, header, span):
        raw = read_span(f, block.offset, block.end)
        where = f"Avro block {block.number} at byte {block.offset} ({len(raw)} bytes)"
        if isinstance(block, Damaged):
            yield -1, None, f"{where}: {block.reason}", raw
            continue
        try:
            decoded = _decode(header, raw, block.count, reader)
        except Exception as e:  # noqa: BLE001  (any decoding failure is the block's, not the job's)
            yield -1, None, f"{where}: {type(e).__name__}: {e}", raw
            continue
        for i, fields in enumerate(decoded):
            yield block.first_row + i, fields, None, None


def read_span(f, offset: int, end: int) -> bytes:
    f.seek(offset)
    return _read_exact(f, end - offset)


def _decode(header: Header, raw: bytes, count: int, reader_schema: dict | None) -> list:
    """The `count` records of a block's bytes `raw` (as framed in the file: count, size, data,
    sync); raises on bad compressed data or record bytes."""
    f = io.BytesIO(raw)
    _read_long(f), _read_long(f)
    data = io.BytesIO(CODECS[header.codec](raw[f.tell():len(raw) - SYNC_SIZE]))
    decoded = [fastavro.schemaless_reader(data, header.schema, reader_schema) for _ in range(count)]
    if data.tell() != len(data.getbuffer()):  # records that decode from garbage rarely fill it exactly
        raise ValueError(f"{len(data.getbuffer()) - data.tell()} bytes left after the block's {count} records")
    return decoded


def _as_reader_of(reader_schema: dict | None, writer_schema: dict) -> dict | None:
    """The reader schema, accepting the writer's top-level record under its own full name: a
    file's records are what its reader asks for, whatever another tool named them."""
    if reader_schema is None or writer_schema.get("name") == reader_schema.get("name"):
        return reader_schema
    return {**reader_schema, "aliases": [*reader_schema.get("aliases", []), writer_schema["name"]]}


def _map_entries(f):
    """The entries of an Avro map<bytes> (the header metadata): blocks of entries, a negative
    count followed by the block's byte size, a zero count at the end."""
    while True:
        count = _read_long(f)
        if count == 0:
            return
        if count < 0:
            count = -count
            _read_long(f)
        for _ in range(count):
            yield _read_bytes(f).decode(), _read_bytes(f)


def _read_bytes(f) -> bytes:
    length = _read_long(f)
    if length < 0:
        raise ValueError(f"negative length {length}")
    return _read_exact(f, length)


def _read_exact(f, n: int) -> bytes:
    here = f.tell()
    left = f.seek(0, 2) - here
    f.seek(here)
    if n > left:  # (a corrupt length: refused before asking for that much memory)
        raise EOFError(f"wanted {n} bytes, found {left}")
    return f.read(n)


def _read_long(f) -> int:
    """An Avro long: zig-zag varint."""
    shift = result = 0
    while True:
        byte = f.read(1)
        if not byte:
            raise EOFError("file ends inside a number")
        result |= (byte[0] & 0x7F) << shift
        if not byte[0] & 0x80:
            return (result >> 1) ^ -(result & 1)
        shift += 7
        if shift > 63:
            raise ValueError("number longer than 10 bytes")


def _next_sync_end(f, sync: bytes, start: int, size: int) -> int:
    """The offset just past the first sync marker at or after `start`, else the file's size."""
    f.seek(start)
    offset, tail = start, b""  # `offset`: where `tail` (a marker's possible first bytes) starts
    while data := f.read(SCAN_BYTES):
        chunk = tail + data
        found = chunk.find(sync)
        if found >= 0:
            return offset + found + SYNC_SIZE
        keep = min(len(chunk), SYNC_SIZE - 1)
        offset, tail = offset + len(chunk) - keep, chunk[len(chunk) - keep:]
    return size
