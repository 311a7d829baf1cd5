"""Windowed prequential metrics: per key and overall, the same in batch and streaming."""
import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to

from core.scoring import score
from pipelines.options import pipeline_options
from tests.conftest import BINARY, phishing_examples
from transforms.evaluation.metrics import WindowedMetrics
from transforms.learning.learn_online import LearnOnline


def _expected_windows(predictions, size_ms):
    by_window = {}
    for p in predictions:
        start = p.event_time // size_ms * size_ms
        for scope in (p.model_key, "*"):
            by_window.setdefault((scope, start), []).append(p)
    return sorted((scope, start, start + size_ms, len(ps), score(ps, "binary"))
                  for (scope, start), ps in by_window.items())


def _row(m):
    return (m.scope, m.window_start, m.window_end, m.count, m.metrics)


def _predictions(examples):
    """Predictions from a batch run, to feed the metrics transform in both modes."""
    collected = []
    with TestPipeline(options=pipeline_options([])) as p:
        out = (p | beam.Create([beam.window.TimestampedValue(e, e.event_time / 1000) for e in examples])
               | LearnOnline(BINARY))
        assert_that(out.predictions, lambda got: collected.extend(got))
    return collected


@pytest.fixture(scope="module")
def predictions():
    return _predictions(phishing_examples(300, ("a", "b")))


def test_fixed_windows_batch(predictions):
    with TestPipeline(options=pipeline_options([])) as p:
        metrics = (p | beam.Create([beam.window.TimestampedValue(x, x.event_time / 1000) for x in predictions])
                   | WindowedMetrics("binary", size_s=100))
        assert_that(metrics | beam.Map(_row), equal_to(_expected_windows(predictions, 100_000)))


def test_fixed_windows_streaming_with_watermarks(predictions):
    stream = TestStream()
    ordered = sorted(predictions, key=lambda x: x.order())
    for i in range(0, len(ordered), 50):
        chunk = ordered[i:i + 50]
        stream = stream.add_elements([beam.window.TimestampedValue(x, x.event_time / 1000) for x in chunk[::-1]])
        stream = stream.advance_watermark_to(chunk[-1].event_time / 1000 + 0.001)
    with TestPipeline(options=pipeline_options(["--streaming"])) as p:
        metrics = p | stream.advance_watermark_to_infinity() | WindowedMetrics("binary", size_s=100)
        assert_that(metrics | beam.Map(_row), equal_to(_expected_windows(predictions, 100_000)))


def test_sliding_windows_cover_each_prediction_size_over_period_times(predictions):
    with TestPipeline(options=pipeline_options([])) as p:
        metrics = (p | beam.Create([beam.window.TimestampedValue(x, x.event_time / 1000) for x in predictions])
                   | WindowedMetrics("binary", size_s=100, period_s=50))
        total = metrics | beam.Filter(lambda m: m.scope == "*") | beam.Map(lambda m: m.count) \
            | beam.WindowInto(beam.window.GlobalWindows()) | beam.CombineGlobally(sum)
        assert_that(total, equal_to([2 * len(predictions)]))


def test_bad_configuration_is_a_clear_error():
    with pytest.raises(ValueError, match="task"):
        WindowedMetrics("ranking", 10)
    with pytest.raises(ValueError, match="positive"):
        WindowedMetrics("binary", 0)
