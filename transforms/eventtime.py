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

Ordered stages (entity features, the learner) keep three event-time timers per key:

- `flush` at the earliest waiting event holds the output watermark there, so what they emit
  keeps its event's time;
- `tick` at the end of the earliest waiting event's tick (event time cut in steps of `tick_ms`)
  applies the whole tick in one firing. A firing applies only what is at or before its own
  timestamp (the one time it knows the watermark has passed), so with `flush` alone a key
  behind a live stream caught up one event time per firing: one bundle round trip each (on
  Prism about 20 ms per key), slower than events arrived;
- `sweep` at the latest waiting event *when it was set* applies a whole backlog in one firing
  once the watermark has passed it (a replay, a catch-up). Arrivals do not move it later
  (firings set it again, at the latest then): behind a live stream, a sweep moved with every
  arrival would never fire, and the key would catch up one tick per firing. Pinned, each sweep
  applies what had arrived when it was set: the lag stays within about twice the watermark's.

`Timers.awaiting` (arrivals) and `Timers.rearm` (firings) set them.
"""
from __future__ import annotations

from typing import NamedTuple

from apache_beam.utils.timestamp import Timestamp

USER_FEATURES_US, ITEM_FEATURES_US, LEARNER_US = 1, 2, 999
TICK_MS = 250  # the default tick (see `Timers`)


def stamp(event_time_ms: int, offset_us: int = 0) -> Timestamp:
    """The Beam timestamp of an event (ms) emitted or awaited by a stage with `offset_us`.

    >>> stamp(1_500, LEARNER_US).micros, millis(stamp(1_500, LEARNER_US))
    (1500999, 1500)
    """
    return Timestamp(micros=event_time_ms * 1000 + offset_us)


def millis(timestamp: Timestamp) -> int:
    """The event-time millisecond of a Beam timestamp."""
    return timestamp.micros // 1000


def tick_end(event_time_ms: int, tick_ms: int) -> int:
    """The last millisecond of the tick that holds `event_time_ms`.

    >>> tick_end(1_000, 250), tick_end(1_249, 250), tick_end(1_250, 250)
    (1249, 1249, 1499)
    """
    return event_time_ms - event_time_ms % tick_ms + tick_ms - 1


NOTHING_WAITS = (None, None, None)  # a stage's span: (earliest, latest waiting, sweep's time)


class Timers(NamedTuple):
    """A stage's three timers (see the module's docstring), its offset and its tick.

    A key's *span* is (earliest waiting time, latest waiting time, the time `sweep` is set at),
    each None when nothing waits (ms)."""
    flush: object
    tick: object
    sweep: object
    offset_us: int
    tick_ms: int

    def awaiting(self, first: int, last: int, span):
        """Timers for events at times `first`..`last` (ms) joining those waiting in `span`;
        returns the new span, or None when the timers already cover them."""
        earliest, latest, sweep_at = span
        if earliest is not None and earliest <= first and last <= latest:
            return None
        new_earliest = first if earliest is None else min(first, earliest)
        new_latest = last if latest is None else max(last, latest)
        if new_earliest != earliest:
            self.flush.set(stamp(new_earliest, self.offset_us))
        if new_latest > new_earliest:  # one event time waiting: `flush` alone applies it
            if sweep_at is None:  # a set `sweep` stays where it is (see the module's docstring)
                sweep_at = new_latest
                self.sweep.set(stamp(sweep_at, self.offset_us))
            end = tick_end(new_earliest, self.tick_ms)
            was_set = earliest is not None and tick_end(earliest, self.tick_ms) < latest
            if end < new_latest and not (new_earliest == earliest and was_set):
                self.tick.set(stamp(end, self.offset_us))
        return new_earliest, new_latest, sweep_at

    def rearm(self, waiting_times, applied: bool, fired: str, fired_ms: int, sweep_at):
        """After the firing of timer `fired` at `fired_ms`: timers for the events still waiting
        (their times; `sweep_at` where `sweep` was set). Returns the new span."""
        if sweep_at is not None and (fired == "sweep" or sweep_at <= fired_ms):
            sweep_at = None  # it fired, or fires now and would find nothing
        if waiting_times:
            earliest, latest = min(waiting_times), max(waiting_times)
            self.flush.set(stamp(earliest, self.offset_us))
            end = tick_end(earliest, self.tick_ms)
            if end < latest:
                self.tick.set(stamp(end, self.offset_us))
            else:
                self.tick.clear()
            if sweep_at is None and latest > earliest:
                sweep_at = latest
                self.sweep.set(stamp(sweep_at, self.offset_us))
            return earliest, latest, sweep_at
        if applied:  # nothing waits: the others would find nothing to apply
            for name in ("flush", "tick", "sweep"):
                if name != fired:
                    getattr(self, name).clear()
        return NOTHING_WAITS
