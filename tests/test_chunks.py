"""ChunkPerKey: chunks keep their values' windows and earliest timestamp, in batch and streaming."""
import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms import window

from pipelines.options import pipeline_options
from transforms.chunks import ChunkPerKey, flatten

# (key, value, event time in seconds): two keys over three 10-second windows, out of order.
EVENTS = [("a", i, t) for i, t in enumerate([3, 25, 1, 14, 27, 9, 12])] + [("b", 100, 5), ("b", 101, 21)]


def _by_window(values, w=beam.DoFn.WindowParam):
    key, chunks = values
    yield key, int(w.start), sorted(flatten(chunks))


def _expected():
    groups = {}
    for key, value, t in EVENTS:
        groups.setdefault((key, t // 10 * 10), []).append(value)
    return [(key, start, sorted(values)) for (key, start), values in groups.items()]


@pytest.mark.parametrize("streaming", [False, True])
def test_chunks_group_like_window_into_then_group_by_key(streaming):
    timestamped = [window.TimestampedValue((k, v), t) for k, v, t in EVENTS]
    with TestPipeline(options=pipeline_options(["--streaming"] if streaming else [])) as p:
        if streaming:
            events = p | TestStream().add_elements(timestamped[:4]).advance_watermark_to(0) \
                .add_elements(timestamped[4:]).advance_watermark_to_infinity()
        else:
            events = p | beam.Create(timestamped)
        grouped = (events | ChunkPerKey(max_size=2, windowfn=window.FixedWindows(10))
                   | beam.GroupByKey() | beam.ParDo(_by_window))
        assert_that(grouped, equal_to(_expected()))


class _Stamp(beam.DoFn):
    def process(self, chunk, ts=beam.DoFn.TimestampParam):
        key, values = chunk
        yield key, sorted(values), ts.micros // 1_000_000


def test_a_chunk_is_stamped_at_its_earliest_value_and_keeps_at_most_max_size():
    timestamped = [window.TimestampedValue((k, v), t) for k, v, t in EVENTS]
    with TestPipeline(options=pipeline_options([])) as p:
        chunks = p | beam.Create(timestamped) | beam.Reshuffle() | ChunkPerKey(max_size=3) | beam.ParDo(_Stamp())
        times = {v: t for _, v, t in EVENTS}

        def check(got):
            assert sorted(v for _, values, _ in got for v in values) == sorted(v for _, v, _ in EVENTS)
            for key, values, stamp in got:
                assert 1 <= len(values) <= 3, values
                assert stamp == min(times[v] for v in values), (key, values, stamp)

        assert_that(chunks, check)


def test_merging_windows_are_refused():
    with pytest.raises(ValueError, match="merges windows"):
        ChunkPerKey(windowfn=window.Sessions(10))
