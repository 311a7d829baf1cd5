"""A taste alarm from clicks: when users start clicking genres their own histories do not
explain, their genre profiles are out of date (issue 17, item 6; `docs/adaptation.md`).

The label-based detectors (`monitoring.drift`) wait for labels, 30 minutes each; clicks come
seconds after their impression. Two steps, both Beam-free (`transforms.features.taste` runs
them as stages):

- per user, `TasteProfile` counts the user's clicks per genre (half-life 24 h, never reset)
  and turns each click into a `signal`: the user's decayed clicks on its genres and in all,
  from before the click;
- over all users in event order, `TasteMonitor` scores each click's log-likelihood ratio of
  its genres under the user's own clicks against all users' clicks of the last hour, and
  river's PageHinkley watches it going down.

>>> user, monitor = TasteProfile(), TasteMonitor()
>>> for t in range(0, 400_000, 1_000):  # a user who clicks dramas, among users who click all
...     user.apply({"event_type": "click", "event_time": t, "item_genres": ["drama"]})
...     _ = monitor.update({"event_time": t, "genres": ["comedy" if t % 2_000 else "drama"],
...                         "user_genre_clicks": [0.0], "user_clicks": 0.0})
>>> s = user.signal({"event_type": "click", "event_time": 400_000, "item_genres": ["comedy"]})
>>> round(s["user_clicks"]), s["user_genre_clicks"]
(399, [0.0])
>>> monitor.update(s) is None  # one surprising click is no drift
True
"""
from __future__ import annotations

import bisect
import itertools
import math

from river import drift

from core.profiles import HOUR_MS, TASTE_ALARMS
from core.records import Row

# Tuned on seeds 7 to 17 (600 users): fired 6 to 24 min after the drift, median ~10; no false
# alarm in ~165 simulated hours without a drift (docs/adaptation.md).
PAGE_HINKLEY = {"mode": "down", "delta": 0.1, "threshold": 20.0, "alpha": 1.0, "min_instances": 200}
USER_HALF_LIFE_MS = 24 * HOUR_MS
GLOBAL_HALF_LIFE_MS = HOUR_MS
SMOOTHING = 2.0  # clicks' worth of all users' genre shares in a user's genre shares
ALARM = "taste_alarm"  # the event type of an alarm record
ALARMS = TASTE_ALARMS  # the pseudo-entity keeping them in a user feature stage and the online store


class TasteProfile:
    """A user's clicks per genre, decayed with a 24 h half-life. Never reset: it says what the
    user clicked before a drift, which is what a drift alarm compares against."""

    def __init__(self, state=None):
        self.t, self.clicks, self.genres = state or (None, 0.0, {})
        self.genres = dict(self.genres)

    def state(self) -> tuple:
        return self.t, self.clicks, dict(self.genres)

    def _decay(self, now: int) -> float:
        return 1.0 if self.t is None or now <= self.t else 0.5 ** ((now - self.t) / USER_HALF_LIFE_MS)

    def apply(self, event: dict) -> None:
        if event["event_type"] != "click":
            return
        now = event["event_time"]
        f = self._decay(now)
        self.clicks = self.clicks * f + 1.0
        self.genres = {g: v * f for g, v in self.genres.items()}
        for g in event.get("item_genres") or ():
            self.genres[g] = self.genres.get(g, 0.0) + 1.0
        self.t = max(now, self.t or now)

    def signal(self, event: dict) -> dict | None:
        """What a click tells the monitor (from before it); None for a click without genres."""
        if event["event_type"] != "click" or not event.get("item_genres"):
            return None
        f = self._decay(event["event_time"])
        return {"event_time": event["event_time"], "genres": list(event["item_genres"]),
                "user_genre_clicks": [self.genres.get(g, 0.0) * f for g in event["item_genres"]],
                "user_clicks": self.clicks * f}


class TasteMonitor:
    """All users' click signals in event order; `update` returns the time of an alarm that a
    click raises. After an alarm river's detector starts afresh: one alarm per drift."""

    def __init__(self, state=None, params: dict | None = None):
        self.params = dict(PAGE_HINKLEY if params is None else params)
        self.detector = drift.PageHinkley(**self.params)
        self.shares, self.t, self.alarms = {}, None, []
        if state:
            self._load(state)

    def update(self, signal: dict) -> int | None:
        now, genres = signal["event_time"], signal["genres"]
        if self.t is not None and now > self.t:
            f = 0.5 ** ((now - self.t) / GLOBAL_HALF_LIFE_MS)
            self.shares = {g: v * f for g, v in self.shares.items()}
        self.t = now if self.t is None else max(now, self.t)
        total, alarm = sum(self.shares.values()), None
        if signal["user_clicks"] >= 1.0 and total > 10:
            p_all = [(self.shares.get(g, 0.0) + 0.5) / (total + 6) for g in genres]
            p_user = [(u + SMOOTHING * p) / (signal["user_clicks"] + SMOOTHING)
                      for u, p in zip(signal["user_genre_clicks"], p_all)]
            self.detector.update(math.log(sum(p_user)) - math.log(sum(p_all)))
            if self.detector.drift_detected:
                alarm = now
                self.alarms.append(now)
        for g in genres:
            self.shares[g] = self.shares.get(g, 0.0) + 1.0 / len(genres)
        return alarm

    # Beam state holds primitives only: the detector's running sums are written out and back.
    _SUMS = ("_sum_increase", "_sum_decrease", "_min_increase", "_max_decrease", "_drift_detected")

    def state(self) -> tuple:
        d = self.detector
        sums = [getattr(d, name) for name in self._SUMS]
        return (self.params, (d._x_mean.n, d._x_mean._mean, sums), dict(self.shares), self.t, list(self.alarms))

    def _load(self, state) -> None:
        self.params, (n, mean, sums), shares, self.t, alarms = state
        self.detector = drift.PageHinkley(**self.params)
        self.detector._x_mean.n, self.detector._x_mean._mean = n, mean
        for name, value in zip(self._SUMS, sums):
            setattr(self.detector, name, value)
        self.shares, self.alarms = dict(shares), list(alarms)


def signals(profile: TasteProfile, rows: list, alarms=()) -> list:
    """A user's click rows (sorted by event time, event id) -> those with a signal in
    `fields["taste_signal"]`, each from the clicks strictly before its instant; all applied
    to `profile`. (The signature of `core.features.featurise`: a feature stage runs it.)"""
    out = []
    for _, instant in itertools.groupby(rows, key=lambda r: r.event_time):
        instant = list(instant)
        for row in instant:
            signal = profile.signal(row.fields)
            if signal is not None:
                out.append(Row(row.event_id, row.event_time, {**row.fields, "taste_signal": signal}, row.origin))
        for row in instant:
            profile.apply(row.fields)
    return out


def raise_alarms(monitor: TasteMonitor, rows: list, alarms=()) -> list:
    """All users' signal rows (sorted by event time, event id) -> the alarms they raise, as rows."""
    out = []
    for row in rows:
        at = monitor.update(row.fields["taste_signal"]) if "taste_signal" in row.fields else None
        if at is not None:
            out.append(alarm_row(at))
    return out


def alarm_row(at: int) -> Row:
    """The record of an alarm at event time `at` (ms)."""
    return Row(f"taste-alarm:{at}", at, {"event_type": ALARM, "event_time": at})


class AlarmTimes:
    """The alarm times a user feature stage has seen (the state of a pseudo-entity, `ALARMS`)."""

    def __init__(self, state=None):
        self.times = list(state or ())

    def state(self) -> list:
        return list(self.times)

    def apply(self, event: dict) -> None:
        bisect.insort(self.times, event["event_time"])
