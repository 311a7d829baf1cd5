"""Event time (epoch ms in each record) on Beam timestamps (µs), for stages that apply
events in event-time order.

Prism fires an event-time timer at T as soon as its input watermark *reaches* T, while an
upstream stage may still emit elements stamped T (its own hold is T). A stage that orders
events must therefore fire strictly after the timestamps its inputs carry. Each ordered
stage stamps what it emits at `event time + its offset` (µs, always below 1 ms, so windows
and the event-time millisecond are unchanged) and sets its timers there; a stage's offset
exceeds those of the stages feeding it:

- sources and stateless steps: 0; `LabelImpressions` fires at the window's end, offset 0
  (its outcomes come strictly before the end);
- entity features: user stage 1, item stage 2;
- `LearnOnline`: 999, after anything else in a millisecond.

Without this, two events of one millisecond reached by paths of different depth could be
applied in a different order than in batch (seen as rare batch/streaming mismatches).
"""
from __future__ import annotations

from apache_beam.utils.timestamp import Timestamp

USER_FEATURES_US, ITEM_FEATURES_US, LEARNER_US = 1, 2, 999


def stamp(event_time_ms: int, offset_us: int = 0) -> Timestamp:
    """The Beam timestamp of an event (ms) emitted or awaited by a stage with `offset_us`.

    >>> stamp(1_500, LEARNER_US).micros, millis(stamp(1_500, LEARNER_US))
    (1500999, 1500)
    """
    return Timestamp(micros=event_time_ms * 1000 + offset_us)


def millis(timestamp: Timestamp) -> int:
    """The event-time millisecond of a Beam timestamp."""
    return timestamp.micros // 1000
