"""Windowed prequential metrics: per key and overall, the same in batch and streaming."""
import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to

from core.records import Prediction
from core.scoring import score
from pipelines.options import pipeline_options
from tests.conftest import phishing_examples, river_predictions
from transforms.evaluation.metrics import WindowedMetrics


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
    """Predictions of bare river in event order (predict, then learn), per model key.

    (Collected from a Beam run into a list, they were lost: the callback ran on a pickled copy
    of the list, and every test compared nothing with nothing.)"""
    made = river_predictions(examples)
    steps = {}
    out = []
    for e in sorted(examples, key=lambda e: e.order()):
        step = steps[e.model_key] = steps.get(e.model_key, -1) + 1
        y_pred, y_proba = made[e.event_id]
        out.append(Prediction(e.event_id, e.model_key, e.event_time, e.y, y_pred, y_proba, step))
    return out


@pytest.fixture(scope="module")
def predictions():
    made = _predictions(phishing_examples(300, ("a", "b")))
    assert len(made) == 300
    return made


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


def _random_predictions(task, n, seed):
    """Predictions with ties in event time, unlabelled and unpredicted ones, three model keys."""
    import random
    from core.records import Prediction
    rng = random.Random(seed)
    out = []
    for i in range(n):
        y_true = None if rng.random() < 0.05 else (
            rng.random() < 0.3 if task == "binary" else rng.choice("abcd") if task == "multiclass"
            else rng.gauss(0, 3))
        if task == "regression":
            y_pred, y_proba = (None if rng.random() < 0.05 else rng.gauss(0, 3)), None
        elif rng.random() < 0.05:
            y_pred, y_proba = None, {}
        else:
            classes = [True, False] if task == "binary" else list("abcd")
            weights = [rng.random() for _ in classes]
            y_proba = {c: w / sum(weights) for c, w in zip(classes, weights)}
            y_pred = max(y_proba, key=y_proba.get)
        out.append(Prediction(f"{rng.randrange(10**6):06d}", rng.choice("xyz"), rng.randrange(n // 3 + 1),
                              y_true, y_pred, y_proba, i))
    return out


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
@pytest.mark.parametrize("seed", range(5))
def test_combined_scores_equal_river_in_event_order_to_the_bit(task, seed):
    """Accumulators built from shuffled chunks in any split, merged in any order, give exactly
    (==, not approximately) the scores of river's metrics over the predictions in event order."""
    import random
    from transforms.evaluation.metrics import MergeScoresFn, ScoresFn, finish
    predictions = _random_predictions(task, 2_000, seed)
    rng = random.Random(seed)
    shuffled = rng.sample(predictions, len(predictions))
    fn = ScoresFn(task)
    fn.setup()
    cuts = sorted(rng.sample(range(1, len(shuffled)), 7))
    order = rng.sample(range(8), 8)

    def accumulators():
        accs = [fn.add_input(fn.create_accumulator(), shuffled[a:b]) for a, b in zip([0] + cuts, cuts + [None])]
        return [accs[i] for i in order]

    accs = accumulators()  # merge_accumulators may modify its first accumulator (Beam's contract)
    merged = fn.merge_accumulators([fn.merge_accumulators(accs[:3]), fn.merge_accumulators(accs[3:])])
    assert merged["count"] == len(predictions)
    assert finish(merged, task) == score(predictions, task)
    # The '*' merge leaves its inputs as they were.
    accs = accumulators()
    before = [finish(a, task) for a in accs]
    merge = MergeScoresFn(task)
    overall = merge.create_accumulator()
    for acc in accs:
        merge.add_input(overall, acc)
    assert finish(overall, task) == score(predictions, task)
    assert [finish(a, task) for a in accs] == before


def test_progressive_metrics_batch_and_streaming_equal_river(predictions):
    from transforms.evaluation.metrics import ProgressiveMetrics
    expected = {k: {"count": sum(p.model_key == k for p in predictions),
                    **score([p for p in predictions if p.model_key == k], "binary")} for k in ("a", "b")}
    for flags in ([], ["--streaming"]):
        with TestPipeline(options=pipeline_options(flags)) as p:
            got = (p | beam.Create([beam.window.TimestampedValue(x, x.event_time / 1000) for x in predictions])
                   | ProgressiveMetrics("binary", by_key=True))
            assert_that(got, equal_to(sorted(expected.items())))
