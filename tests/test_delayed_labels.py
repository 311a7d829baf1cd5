"""A served prediction meets its delayed label; one whose partner was late leaves, counted."""
import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to

from core.records import LEARN, PREDICT, Example
from pipelines.options import pipeline_options
from transforms.evaluation.delayed_labels import ScoreDelayedLabels, unpaired_kind
from transforms.learning.learn_online import LearnOnline

DELAY_S = 10
MODEL = "models.zoo:logistic_regression"


def _served(event_id, at_s):
    return Example(event_id, at_s * 1000, {"x": float(at_s)}, None, "default", mode=PREDICT)


def _label(event_id, served_at_s, y=True):
    return Example(event_id, (served_at_s + DELAY_S) * 1000, {"x": float(served_at_s)}, y, "default",
                   origin=(("interactions", 0, served_at_s, served_at_s),), mode=LEARN)


def _at(*examples):
    return [beam.window.TimestampedValue(e, e.event_time / 1000) for e in examples]


def _score(p, examples):
    learned = examples | LearnOnline(MODEL)
    scored = (learned.predictions, learned.learned) | ScoreDelayedLabels(DELAY_S)
    return scored, learned.dead_letters


def test_a_late_prediction_or_label_leaves_unpaired_instead_of_waiting_forever():
    """b's prediction comes after the learner applied c (late: a dead letter), so b's label is
    learned without it; c's label comes after the learner applied d (late), so c's prediction
    never gets one. Before, both waited in state for good and held their offsets back."""
    stream = (TestStream()
              .add_elements(_at(_served("a", 1), _served("c", 3))).advance_watermark_to(5)
              .add_elements(_at(_served("b", 2))).advance_watermark_to(6)
              .add_elements(_at(_label("a", 1), _label("b", 2), _served("d", 15))).advance_watermark_to(20)
              .add_elements(_at(_label("c", 3), _label("d", 15))).advance_watermark_to_infinity())
    with TestPipeline(options=pipeline_options(["--streaming"])) as p:
        scored, dead = _score(p, p | stream)
        assert_that(scored.scored | beam.Map(lambda s: (s.event_id, s.y_true)),
                    equal_to([("a", True), ("d", True)]), label="Scored")
        assert_that(scored.unpaired | beam.Map(lambda r: (unpaired_kind(r), r.event_id, r.origin)),
                    equal_to([("label", "b", (("interactions", 0, 2, 2),)), ("prediction", "c", ())]),
                    label="Unpaired")
        assert_that(dead | beam.Map(lambda d: (d.reason.split(":")[0], d.event_time)),
                    equal_to([("late", 2000), ("late", 13000)]), label="Late")


@pytest.mark.parametrize("mode", ["batch", "streaming"])
def test_every_prediction_with_its_label_is_scored_and_none_left(mode):
    events = [_served(f"e{i}", i) for i in range(6)] + [_label(f"e{i}", i, y=i % 2 == 0) for i in range(6)]
    options = pipeline_options(["--streaming"] if mode == "streaming" else [])
    with TestPipeline(options=options) as p:
        source = (p | TestStream().add_elements(_at(*events)).advance_watermark_to_infinity()
                  if mode == "streaming" else p | beam.Create(_at(*events)))
        scored, _ = _score(p, source)
        assert_that(scored.scored | beam.Map(lambda s: (s.event_id, s.y_true, s.origin)),
                    equal_to([(f"e{i}", i % 2 == 0, (("interactions", 0, i, i),)) for i in range(6)]),
                    label="Scored")
        assert_that(scored.unpaired, equal_to([]), label="NoneLeft")


def test_batch_reports_the_unpaired_too():
    events = [_served("a", 1), _label("a", 1), _served("b", 2), _label("c", 3)]
    with TestPipeline(options=pipeline_options([])) as p:
        scored, _ = _score(p, p | beam.Create(_at(*events)))
        assert_that(scored.unpaired | beam.Map(lambda r: (unpaired_kind(r), r.event_id)),
                    equal_to([("prediction", "b"), ("label", "c")]))


def test_a_negative_label_delay_is_refused():
    with pytest.raises(ValueError, match="negative"):
        ScoreDelayedLabels(-1)
