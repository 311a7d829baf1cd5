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

Ordered stages (entity features, the learner) keep two event-time timers per key: `flush` at
the earliest waiting event holds the output watermark there, so what they emit keeps its
event's time; `sweep` at the latest applies a whole backlog in one firing once the watermark
has passed it (a replay, a catch-up), not one firing per event time (a bundle round trip each
on Prism and Flink). `await_events` and `rearm` set them.
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


def await_events(first: int, last: int, earliest, latest, flush, sweep, offset_us: int):
    """Timers for events at times `first`..`last` (ms) joining those waiting in
    [earliest, latest]; returns the new (earliest, latest), or None when both timers already
    cover them."""
    if earliest is not None and earliest <= first and last <= latest:
        return None
    if earliest is None or first < earliest:
        earliest = first
        flush.set(stamp(first, offset_us))
    if latest is None or last > latest:
        latest = last
    if latest > earliest:  # one event time waiting: `flush` alone applies it
        sweep.set(stamp(latest, offset_us))
    return earliest, latest


def rearm(waiting_times, applied: bool, flush, sweep, other, offset_us: int):
    """After a firing: timers for the events still waiting (their times); `other` is the timer
    that did not fire. Returns the new (earliest, latest), (None, None) when nothing waits."""
    if waiting_times:
        earliest, latest = min(waiting_times), max(waiting_times)
        flush.set(stamp(earliest, offset_us))
        if latest > earliest:
            sweep.set(stamp(latest, offset_us))
        else:
            sweep.clear()
        return earliest, latest
    if applied:
        other.clear()  # nothing waits: the other timer would find nothing to apply
    return None, None
