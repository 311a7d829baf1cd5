"""CSV files as records (`core.decoding.records("csv", data)`), none lost silently.

The bytes are split into records as Python's csv module reads them with the dialect of pandas'
python engine (a quoted field may span lines), each record keeping its original bytes. A
record is a dead letter, with those bytes and a reason, if it is not UTF-8, has more cells than
the header, or is not valid CSV. pandas then reads the header and the good records only, so
rows are typed exactly as pandas types a well-formed file (ints; floats parsed exactly; NaN for
empty cells; strings), one row per good record, in order.

- Recovery: a record the csv module cannot read (a quote closed mid-field, or a quote left open
  to the end of the file) makes its first line a dead letter; the other lines it took are read
  one record per line, then reading goes on as before. A stray quote costs its own line, not
  the rest of the file, and no line is read more than twice.
- Blank lines (no cells, or one blank cell: what pandas skips) are skipped. Indexes count the
  other records after the header, bad ones too, so a row's index (its default event time and
  id) does not move when another record is damaged; for a well-formed file they are pandas'.
- A row with fewer cells than the header is a row (the missing cells NaN).
- No header (an empty or blank file, or a first record that cannot be read): one dead letter
  holding the file's bytes.

>>> for item in csv_records(b'a,b\\n1,x\\n"y,z",2,3\\n\\n4\\n'):
...     print(item)
(0, {'a': 1, 'b': 'x'}, None, b'1,x')
(1, None, 'line 3: 3 cells, the header has 2', b'"y,z",2,3')
(2, {'a': 4, 'b': nan}, None, b'4')
>>> for item in csv_records(b'a,b\\n1,2\\n"3,4\\n5,6\\n'):  # a quote left open
...     print(item)
(0, {'a': 1, 'b': 2}, None, b'1,2')
(1, None, 'line 3: malformed CSV (unexpected end of data)', b'"3,4')
(2, {'a': 5, 'b': 6}, None, b'5,6')
>>> list(csv_records(b""))
[(0, None, 'empty CSV file', b'')]
"""
from __future__ import annotations

import csv
import io

import pandas as pd

# The dialect pandas' python engine reads with (pandas/io/parsers/python_parser.py).
_DIALECT = dict(delimiter=",", quotechar='"', escapechar=None, doublequote=True, skipinitialspace=False,
                quoting=csv.QUOTE_MINIMAL, lineterminator="\n", strict=True)


def csv_records(data: bytes):
    """`(index, fields, error, raw)` for each non-blank record after the header: raw is the
    record's bytes (without its last line end, as JSON Lines' lines), fields pandas' row for
    it, or error why it is a dead letter."""
    # Lines as a file opened with newline="" gives them (ends at \n, \r\n or \r, kept); bytes
    # that are not UTF-8 are carried as lone surrogates, so each line's bytes come back exactly.
    lines = list(io.StringIO(data.decode("utf-8", "surrogateescape"), newline=""))
    raws = [line.encode("utf-8", "surrogateescape") for line in lines]
    records = _split(lines)
    header = next(((first, end, cells, error) for first, end, cells, error in records
                   if error is not None or not _blank(cells)), None)
    if header is None:
        yield 0, None, "empty CSV file", data
        return
    first, end, cells, error = header
    head = b"".join(raws[:end])  # with any blank lines before it, as pandas reads them
    error = error or _not_utf8(b"".join(raws[first:end]))
    if error:
        yield 0, None, f"no CSV header: line {first + 1}: {error}", data
        return
    items = []  # (index, first line, raw, error)
    for first, end, cells, error in records:
        if error is None and _blank(cells):
            continue
        raw = b"".join(raws[first:end])
        error = error or _not_utf8(raw) or (
            f"{len(cells)} cells, the header has {len(header[2])}" if len(cells) > len(header[2]) else None)
        items.append((len(items), first, raw, error))
    rows = iter(_typed(head, [raw for _, _, raw, error in items if error is None]))
    for index, first, raw, error in items:
        fields = None if error else next(rows)
        if not error and fields is None:
            error = "pandas cannot read this record"
        raw = raw[:-2] if raw.endswith(b"\r\n") else raw[:-1] if raw.endswith((b"\n", b"\r")) else raw
        yield (index, None, f"line {first + 1}: {error}", raw) if error else (index, fields, None, raw)


class _Lines:
    """An iterator over lines that can be told where to go on from (`at`)."""

    def __init__(self, lines: list):
        self.lines, self.at = lines, 0

    def __iter__(self):
        return self

    def __next__(self) -> str:
        if self.at >= len(self.lines):
            raise StopIteration
        self.at += 1
        return self.lines[self.at - 1]


def _split(lines: list):
    """`(first, end, cells, error)` per record: it is lines[first:end], and its cells, or the
    csv module's error (then it is the record's first line only: see the recovery above)."""
    source = _Lines(lines)
    reader = csv.reader(source, **_DIALECT)
    while source.at < len(lines):
        first = source.at
        try:
            cells = next(reader)
        except csv.Error as e:  # the reader starts afresh on the line after those it took
            yield first, first + 1, None, f"malformed CSV ({e})"
            for at in range(first + 1, source.at):
                yield (at, at + 1, *_one_line(lines[at]))
            continue
        yield first, source.at, cells, None


def _one_line(line: str) -> tuple:
    try:
        return next(csv.reader([line], **_DIALECT)), None
    except csv.Error as e:
        return None, f"malformed CSV ({e})"


def _blank(cells: list) -> bool:
    """What pandas' python engine skips as a blank line."""
    return not cells or (len(cells) == 1 and not cells[0].strip())


def _not_utf8(raw: bytes) -> str | None:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return f"not UTF-8 ({e})"
    return None


def _typed(head: bytes, raws: list) -> list:
    """pandas' row for each record after the header (None where pandas will not read it)."""
    rows = _frame(head, raws)
    if rows is None:  # pandas disagrees with the split (never seen): each record on its own
        rows = [one[0] if (one := _frame(head, [raw])) is not None else None for raw in raws]
    return rows


def _frame(head: bytes, raws: list) -> list | None:
    bad = []
    try:  # the python engine parses floats exactly (round trip)
        frame = pd.read_csv(io.BytesIO(head + b"".join(raws)), engine="python", on_bad_lines=bad.append)
    except (ValueError, csv.Error):  # (pandas' ParserError and EmptyDataError are ValueErrors)
        return None
    rows = frame.to_dict("records")
    return rows if not bad and len(rows) == len(raws) else None
