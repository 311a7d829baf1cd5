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
- taste alarms (`transforms.features.taste`): per-user signals 1, the monitor 2;
- entity features: user stage 3, item stage 4;
- `LearnOnline`: 999, after anything else in a millisecond.

Without this, two events of one millisecond reached by paths of different depth could be
applied in a different order than in batch (seen as rare batch/streaming mismatches).

(The offsets live in Beam timestamps only within a stage: the Fn API carries timestamps
between stages in milliseconds.)

Ordered stages (entity features, labels, the learner, pairing) work in *ticks*, event time
cut in steps of `tick_ms`, with two event-time timers per key, each firing just after the end
of a tick (`tick end + 1 ms`, past any input stamped in the tick) while *holding* the output
watermark at the earliest waiting event (the Fn API timer's hold, `set_timer`), so what they
emit keeps its event's time:

- `flush`, for the tick of the earliest waiting event, applies that whole tick. It used to
  fire at the earliest event itself, holding there: a firing applies only what is at or
  before its own timestamp (the one time it knows the watermark has passed), so each stage
  released the watermark one event time per firing and the next stage caught up one event per
  bundle round trip behind a live stream (measured: most of the learner's firings applied one
  event). Firing at tick ends, the watermark and every stage move a tick at a time;
- `sweep`, for the tick of the latest waiting event *when it was set*, applies a whole
  backlog in one firing once the watermark has passed it (a replay, a catch-up). Arrivals do
  not move it later (firings set it again, at the latest then): behind a live stream, a sweep
  moved with every arrival would never fire, and the key would catch up one tick per firing.
  Pinned, each sweep applies what had arrived when it was set: the lag stays within about
  twice the watermark's.

`Timers.awaiting` (arrivals) and `Timers.rearm` (firings) set them.
"""
from __future__ import annotations

from typing import NamedTuple

from apache_beam.transforms import userstate
from apache_beam.utils.timestamp import Timestamp

TASTE_SIGNALS_US, TASTE_MONITOR_US, USER_FEATURES_US, ITEM_FEATURES_US, LEARNER_US = 1, 2, 3, 4, 999
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


def applied_up_to(fired_at: Timestamp) -> int:
    """The last event time (ms) a firing at `fired_at` applies: the end of the tick before it."""
    return millis(fired_at) - 1


def set_timer(timer, fire_ms: int, hold: Timestamp) -> None:
    """Sets an event-time `timer` to fire at `fire_ms` while holding the output watermark at
    `hold` (Java's `Timer.withOutputTimestamp`). The Python SDK's `set` holds at the firing
    time; the Fn API's timer carries both, so this writes it as `set` does, with the hold."""
    try:
        key, window, paneinfo = timer._key, timer._window, timer._paneinfo
        coder, stream = timer._timer_coder_impl, timer._output_stream
    except AttributeError:
        raise TypeError(f"{type(timer).__name__} is not the portable SDK harness's timer: "
                        "ordered stages need a portable runner (Prism, Flink, the FnApiRunner)") from None
    coder.encode_to_stream(userstate.Timer(user_key=key, dynamic_timer_tag="", windows=(window,), clear_bit=False,
                                           fire_timestamp=Timestamp(micros=fire_ms * 1000), hold_timestamp=hold,
                                           paneinfo=paneinfo), stream, True)
    stream.maybe_flush()


class Timers(NamedTuple):
    """A stage's two timers (see the module's docstring), its offset and its tick.

    A key's *span* is (earliest waiting time, latest waiting time, the time `sweep` is set for),
    each None when nothing waits (ms)."""
    flush: object
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
        hold = stamp(new_earliest, self.offset_us)
        if new_earliest != earliest:
            set_timer(self.flush, tick_end(new_earliest, self.tick_ms) + 1, hold)
        if sweep_at is None and tick_end(new_latest, self.tick_ms) > tick_end(new_earliest, self.tick_ms):
            sweep_at = new_latest  # a set `sweep` stays where it is (see the module's docstring)
            set_timer(self.sweep, tick_end(sweep_at, self.tick_ms) + 1, hold)
        return new_earliest, new_latest, sweep_at

    def rearm(self, waiting_times, applied: bool, fired: str, fired_ms: int, sweep_at):
        """After the firing of timer `fired` that applied events up to `fired_ms`: timers for
        the events still waiting (their times; `sweep_at` where `sweep` was set). Returns the
        new span."""
        if sweep_at is not None and (fired == "sweep" or tick_end(sweep_at, self.tick_ms) <= fired_ms):
            sweep_at = None  # it fired, or fires now and would find nothing
        if waiting_times:
            earliest, latest = min(waiting_times), max(waiting_times)
            hold = stamp(earliest, self.offset_us)
            set_timer(self.flush, tick_end(earliest, self.tick_ms) + 1, hold)
            if sweep_at is None and tick_end(latest, self.tick_ms) > tick_end(earliest, self.tick_ms):
                sweep_at = latest
            if sweep_at is not None:  # where it was, holding no earlier than what still waits
                set_timer(self.sweep, tick_end(sweep_at, self.tick_ms) + 1, hold)
            return earliest, latest, sweep_at
        if applied:  # nothing waits: the other would find nothing to apply
            (self.sweep if fired == "flush" else self.flush).clear()
        return NOTHING_WAITS
