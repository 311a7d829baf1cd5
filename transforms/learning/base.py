"""What the batch and the streaming learner DoFns share: the `core.learning.Learner`'s life on
a worker, and what it returns as Beam elements.

Predictions, learned examples and alerts are stamped just after their event time (`LEARNER_US`:
see `transforms.eventtime`); dead letters, learned examples and alerts leave through tagged
outputs.
"""
from __future__ import annotations

import functools

import apache_beam as beam

from core.learning import ALERT, DEAD_LETTER, LEARNED as LEARNED_KIND, Learner
from transforms.eventtime import LEARNER_US, stamp
from transforms.progress import add_progress

DEAD_LETTERS = "dead_letters"
LEARNED = "learned"
ALERTS = "alerts"


class LearnerDoFn(beam.DoFn):
    """Opens the learner on the worker (its store, and its signing keys: the DoFn carries only
    where to find them, `models.serde.KeySource`), ticks `progress` as it applies events."""

    def __init__(self, learner: Learner, progress: str | None = None):
        self.learner, self.progress = learner, progress

    def setup(self):
        self.learner.open()
        if self.progress:
            self.learner.progress = functools.partial(add_progress, self.progress)

    def teardown(self):
        self.learner.close()


def emit(out, made, learned):
    """Elements for (out, made, learned) of `Learner.apply`, in that order."""
    for kind, record in out:
        yield _element(kind, record)
    for prediction in made:
        yield beam.window.TimestampedValue(prediction, stamp(prediction.event_time, LEARNER_US))
    for example in learned:
        yield beam.pvalue.TaggedOutput(LEARNED, beam.window.TimestampedValue(example, stamp(example.event_time, LEARNER_US)))


def emit_replayed(out):
    """Elements for the (kind, record) pairs of `Learner.replay_or_late`."""
    for kind, record in out:
        yield _element(kind, record)


def _element(kind, record):
    if kind == DEAD_LETTER:
        return beam.pvalue.TaggedOutput(DEAD_LETTERS, record)
    if kind == ALERT:
        return beam.pvalue.TaggedOutput(ALERTS, beam.window.TimestampedValue(
            record, stamp(record.event_time or 0, LEARNER_US)))
    timestamped = beam.window.TimestampedValue(record, stamp(record.event_time, LEARNER_US))
    return beam.pvalue.TaggedOutput(LEARNED, timestamped) if kind == LEARNED_KIND else timestamped
