"""WriteRecords: one whole file per output from many bundles' parts, readable by Java's avro-tools,
in batch and streaming, with nothing left beside it."""
import json
import subprocess

import apache_beam as beam
import fastavro
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.transforms import window

from core.records import WindowedMetric
from pipelines.options import pipeline_options
from tests.test_avro_files import AVRO_TOOLS
from transforms.io.sinks import PartFormat, WriteRecords, _concatenate

N = 3000


def _metric(i: int) -> WindowedMetric:
    start = i // 100 * 100_000
    return WindowedMetric(f"key-{i % 7}", start, start + 100_000, i, {"rocauc": i / N, "logloss": 1 / (i + 1)})


def _records(path, fmt):
    if fmt == "avro":
        with open(path, "rb") as f:
            return list(fastavro.reader(f))
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("fmt", ["avro", "jsonl"])
def test_many_bundles_write_one_file_with_every_record(tmp_path, fmt):
    # Reshuffled and windowed: records of many windows in each bundle.
    with TestPipeline(options=pipeline_options([])) as p:
        _ = (p | beam.Create(range(N)) | beam.Reshuffle()
             | beam.Map(lambda i: window.TimestampedValue(_metric(i), i))
             | beam.WindowInto(window.FixedWindows(100))
             | WriteRecords(str(tmp_path / "metrics"), "metric", fmt))
    assert sorted(tmp_path.iterdir()) == [tmp_path / f"metrics.{fmt}"], "the parts and temporary file are gone"
    got = _records(tmp_path / f"metrics.{fmt}", fmt)
    assert sorted(r["count"] for r in got) == list(range(N))
    assert got[0] == {**_metric(got[0]["count"]).to_avro()}


def test_parts_concatenate_into_an_avro_file_that_reads_in_java(tmp_path):
    parts = PartFormat("avro", "metric", parts_dir=str(tmp_path / "parts"))
    (tmp_path / "parts").mkdir()
    paths = [str(tmp_path / "parts" / f"part-{k}") for k in range(3)]
    for k, path in enumerate(paths):  # 1,000 records a part: several blocks each
        write, close = parts.open(open(path, "wb"))
        for i in range(k * 1000, (k + 1) * 1000):
            write(_metric(i))
        close()
    listed = [(1000 - k, path) for k, path in enumerate(paths)]  # the last part's records are the earliest
    assert list(_concatenate(None, str(tmp_path / "metrics.avro"), parts, listed)) == [str(tmp_path / "metrics.avro")]
    assert sorted(tmp_path.iterdir()) == [tmp_path / "metrics.avro"], "the parts are deleted"
    java = subprocess.run(["java", "-jar", AVRO_TOOLS, "tojson", str(tmp_path / "metrics.avro")],
                          capture_output=True, text=True, check=True)
    counts = [json.loads(line)["count"] for line in java.stdout.splitlines()]
    assert counts == list(range(2000, 3000)) + list(range(1000, 2000)) + list(range(1000))


@pytest.mark.parametrize("fmt", ["avro", "jsonl"])
def test_no_records_still_write_an_empty_file(tmp_path, fmt):
    with TestPipeline(options=pipeline_options([])) as p:
        _ = p | beam.Create([], reshuffle=False).with_output_types(WindowedMetric) \
            | WriteRecords(str(tmp_path / "metrics"), "metric", fmt)
    assert _records(tmp_path / f"metrics.{fmt}", fmt) == []


def test_a_stream_writes_its_file_once_it_ends(tmp_path):
    events = [window.TimestampedValue(_metric(i), i) for i in range(300)]
    with TestPipeline(options=pipeline_options(["--streaming"])) as p:
        _ = (p | TestStream().add_elements(events[:100]).advance_watermark_to(150)
             .add_elements(events[100:]).advance_watermark_to_infinity()
             | beam.WindowInto(window.FixedWindows(100))
             | WriteRecords(str(tmp_path / "metrics"), "metric", "avro"))
    assert sorted(r["count"] for r in _records(tmp_path / "metrics.avro", "avro")) == list(range(300))


def test_a_part_written_with_another_header_is_refused(tmp_path):
    parts = PartFormat("avro", "metric", parts_dir=str(tmp_path / "parts"))
    (tmp_path / "parts").mkdir()
    stranger = PartFormat("avro", "metric", parts_dir=str(tmp_path / "parts"))  # its own sync marker
    write, close = stranger.open(open(tmp_path / "parts" / "part-1", "wb"))
    write(_metric(1))
    close()
    with pytest.raises(IOError, match="its header differs"):
        list(_concatenate(None, str(tmp_path / "metrics.avro"), parts, [(0, str(tmp_path / "parts" / "part-1"))]))
    assert not (tmp_path / "metrics.avro").exists()
