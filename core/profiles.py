"""Entity profiles: what a user or an item did recently, as decayed counters, point in time.

A profile is updated one event at a time in event-time order and answers `features(at)`
with what it knew *before* `at`. Counters decay exponentially (half-lives of 1 h and 24 h),
so a profile has a fixed size whatever the history: a few floats, and one pair per genre.

>>> user = UserProfile()
>>> user.apply({"event_type": "impression", "event_time": 0, "item_genres": ["drama"]})
>>> user.apply({"event_type": "click", "event_time": 1_000, "item_genres": ["drama"]})
>>> f = user.features(3_600_000 + 1_000, ["drama"])
>>> round(f["u_imp_1h"], 3), round(f["u_click_1h"], 3), round(f["ug_ctr"], 3)  # log1p(0.5): half-life 1 h
(0.405, 0.405, 0.544)
"""
from __future__ import annotations

import bisect
import math

from stores.online import TASTE_ALARMS  # noqa: F401  (re-exported)

HOUR_MS = 3_600_000
# The features decay with 1 h and 24 h; a user's genre counters also keep 15 min, what a taste
# reset keeps (`UserProfile.catch_up`).
HALF_LIVES = {"15m": HOUR_MS // 4, "1h": HOUR_MS, "24h": 24 * HOUR_MS}
GENRE_HALF_LIVES = ("15m", "1h", "24h")
RESET_KEEPS = "15m"
# TASTE_ALARMS: the user "profile" that holds the taste alarms' times (`monitoring.taste`), in a
# user feature stage's state and in the online store, where a server reads it with the user's
# profile (a name the store reserves).
SESSION_GAP_MS = 30 * 60_000
POSITIVE = ("click", "watch")
# Smoothing toward a 10% click rate, worth one impression: an unseen entity has CTR 0.1.
PRIOR_CLICKS, PRIOR_IMPRESSIONS = 0.1, 1.0
NEVER_S = 7 * 24 * 3600  # "time since last event" of an entity with no event yet
FEATURE_PREFIXES = ("u_", "ug_", "i_")  # user, user x genre, item: the names of all features here


def is_entity_feature(name) -> bool:
    return isinstance(name, str) and name.startswith(FEATURE_PREFIXES)


class _Decayed:
    """Counters that halve every `half_life` ms, stored as of time `t`."""

    def __init__(self, state=None):
        t, counts = state if state else (None, {})
        self.t, self.counts = t, dict(counts)  # a copy: a state value may be kept (Beam's cache, a worker's)

    def state(self) -> tuple:
        return self.t, dict(self.counts)  # a copy: later updates do not change a state already handed out

    def at(self, now: int) -> dict:
        """The counters decayed to `now` (not stored)."""
        if self.t is None or now == self.t:
            return dict(self.counts)
        factors = {h: 0.5 ** ((now - self.t) / ms) for h, ms in HALF_LIVES.items()}
        return {name: v * factors[name.rsplit("@", 1)[1]] for name, v in self.counts.items()}

    def add(self, now: int, names):
        if self.t is not None and now < self.t:  # a late event: its weight as of `t`
            for name in names:
                h = HALF_LIVES[name.rsplit("@", 1)[1]]
                self.counts[name] = self.counts.get(name, 0.0) + 0.5 ** ((self.t - now) / h)
            return
        self.counts, self.t = self.at(now), now
        for name in names:
            self.counts[name] = self.counts.get(name, 0.0) + 1.0


def _ctr(clicks: float, impressions: float) -> float:
    return (clicks + PRIOR_CLICKS) / (impressions + PRIOR_IMPRESSIONS)


class UserProfile:
    """A user's activity, click rate, genre affinity, recency and session."""

    def __init__(self, state=None):
        decayed, self.last, self.session_start, self.session_events, *reset = state or (None, None, None, 0)
        self.counters = _Decayed(decayed)
        self.reset_at = reset[0] if reset else None  # the newest taste alarm applied (a state of old: none)

    def state(self) -> tuple:
        return self.counters.state(), self.last, self.session_start, self.session_events, self.reset_at

    def catch_up(self, now: int, alarms) -> None:
        """Applies the taste alarms (`monitoring.taste`; sorted times) strictly before `now` that
        the profile has not applied: the genre counters restart from their last 15 minutes'
        counts, the user's taste since just before the drift, kept as evidence of the new one.
        Activity, click rate, recency and session stay. Strictly before: an alarm raised by a
        click at t is no feature of an impression at t.

        >>> user = UserProfile()
        >>> user.apply({"event_type": "click", "event_time": 0, "item_genres": ["drama"]})
        >>> user.apply({"event_type": "click", "event_time": 3_600_000, "item_genres": ["comedy"]})
        >>> user.catch_up(3_600_001, [3_600_000])  # drama: 0.97 clicks of 24 h -> 0.06 of 15 min
        >>> f = user.features(3_600_001, ["drama"]), user.features(3_600_001, ["comedy"])
        >>> round(f[0]["ug_share"], 3), round(f[1]["ug_share"], 3), round(f[0]["u_click_24h"], 3)
        (0.021, 0.337, 1.089)
        """
        i = bisect.bisect_left(alarms, now)
        if not i or (self.reset_at is not None and alarms[i - 1] <= self.reset_at):
            return
        at = alarms[i - 1]
        c = self.counters
        if c.t is not None:
            at_least = max(at, c.t)  # an alarm come late (streaming): reset from where the profile is
            counts = c.at(at_least)
            kept = {k.rsplit("@", 1)[0]: v for k, v in counts.items()
                    if k.startswith("g:") and k.endswith("@" + RESET_KEEPS)}
            c.counts = {k: v for k, v in counts.items() if not k.startswith("g:")}
            for base, v in kept.items():
                for h in GENRE_HALF_LIVES:
                    c.counts[f"{base}@{h}"] = v
            c.t = at_least
        self.reset_at = at

    def apply(self, event: dict):
        now, kind = event["event_time"], event["event_type"]
        if kind == "impression":
            names = ["imp@1h", "imp@24h"] + [f"g:{g}:imp@{h}" for g in event.get("item_genres") or ()
                                             for h in GENRE_HALF_LIVES]
        elif kind in POSITIVE:
            names = [f"{kind}@1h", f"{kind}@24h"] + [f"g:{g}:{kind}@{h}" for g in event.get("item_genres") or ()
                                                     for h in GENRE_HALF_LIVES]
        else:
            names = [f"{kind}@24h"]
        self.counters.add(now, names)
        if self.last is None or now - self.last > SESSION_GAP_MS:
            self.session_start, self.session_events = now, 0
        self.session_events += 1
        self.last = now

    def features(self, at: int, genres) -> dict:
        return self._features(self.counters.at(at), at, genres)

    def features_for(self, at: int, genre_sets) -> tuple[dict, list[dict]]:
        """`features(at, genres)` for each of `genre_sets` (a ranking's candidates), in two parts:
        the user's own features, and per set its genre features (one dict per distinct set,
        shared). The counters are decayed once, the own features computed once."""
        c = self.counters.at(at)
        by_genres, counts = {}, _GenreCounts(c)
        for genres in genre_sets:
            key = tuple(genres)
            if key not in by_genres:
                by_genres[key] = self._genre_features(c, genres, counts)
        return self._own_features(c, at), [by_genres[tuple(genres)] for genres in genre_sets]

    def _features(self, c: dict, at: int, genres) -> dict:
        return {**self._own_features(c, at), **self._genre_features(c, genres)}

    def _own_features(self, c: dict, at: int) -> dict:
        get = lambda name: c.get(name, 0.0)  # noqa: E731
        in_session = self.last is not None and at - self.last <= SESSION_GAP_MS
        # A late event (at or before the last one applied) is featurised from what the profile
        # knows, as if it came right after that: never from a negative time.
        since_s = NEVER_S if self.last is None else min(max((at - self.last) / 1000, 0.0), NEVER_S)
        log = math.log1p
        # Scaled by design (logs of counts, rates, fractions), so that a linear model learns
        # them by SGD without a running scaler, whose early variance estimates blow up.
        return {
            "u_imp_1h": log(get("imp@1h")), "u_imp_24h": log(get("imp@24h")),
            "u_click_1h": log(get("click@1h")), "u_click_24h": log(get("click@24h")),
            "u_ctr_24h": _ctr(get("click@24h"), get("imp@24h")),
            "u_skip_24h": log(get("skip@24h")), "u_watch_24h": log(get("watch@24h")),
            "u_since_last": log(since_s) / log(NEVER_S),
            "u_session_events": log(self.session_events) if in_session else 0.0,
            "u_session_frac": max(at - self.session_start, 0) / SESSION_GAP_MS if in_session else 0.0,
        }

    @staticmethod
    def _genre_features(c: dict, genres, counts: _GenreCounts | None = None) -> dict:
        counts = _GenreCounts(c) if counts is None else counts
        per_genre = [counts[g] for g in genres]
        # Summed genre by genre, as sum() over the counters did: the same rounding.
        genre_imp, genre_click = sum(n[0] for n in per_genre), sum(n[1] for n in per_genre)
        recent_imp, recent_click = sum(n[2] for n in per_genre), sum(n[3] for n in per_genre)
        get = c.get
        return {
            "ug_ctr": _ctr(genre_click, genre_imp), "ug_clicks_24h": math.log1p(genre_click),
            "ug_share": genre_click / (get("click@24h", 0.0) + 1.0),
            "ug_ctr_1h": _ctr(recent_click, recent_imp), "ug_share_1h": recent_click / (get("click@1h", 0.0) + 1.0),
        }


class _GenreCounts(dict):
    """genre -> its (impressions 24 h, clicks 24 h, impressions 1 h, clicks 1 h) in decayed
    counters `c`, each genre's looked up once (a ranking asks about ~50 genre sets)."""

    def __init__(self, c: dict):
        super().__init__()
        self.c = c

    def __missing__(self, g):
        get = self.c.get
        n = self[g] = (get(f"g:{g}:imp@24h", 0.0), get(f"g:{g}:click@24h", 0.0),
                       get(f"g:{g}:imp@1h", 0.0), get(f"g:{g}:click@1h", 0.0))
        return n


class ItemProfile:
    """An item's popularity and click rate, and its genres as its last impression gave them
    (a server ranks candidate items with them)."""

    def __init__(self, state=None):
        decayed, genres = state or (None, ())
        self.counters, self.genres = _Decayed(decayed), tuple(genres)

    def state(self) -> tuple:
        return self.counters.state(), list(self.genres)

    def apply(self, event: dict):
        kind = event["event_type"]
        if kind == "impression" and event.get("item_genres"):
            self.genres = tuple(event["item_genres"])
        self.counters.add(event["event_time"], [f"{kind}@1h", f"{kind}@24h"])

    def popularity(self, at: int) -> float:
        """Impressions over the last day or so (decayed, half-life 24 h) as of `at`."""
        return self.counters.at(at).get("impression@24h", 0.0)

    def features(self, at: int, genres=()) -> dict:
        return self.features_and_popularity(at)[0]

    def features_and_popularity(self, at: int) -> tuple[dict, float]:
        """`features(at)` and `popularity(at)`: a ranking needs both, for 100 candidates, so the
        four counters they read are decayed alone (as `_Decayed.at` would: the same values)."""
        counts, t = self.counters.counts, self.counters.t
        hour = day = 1.0
        if t is not None and at != t:
            hour, day = 0.5 ** ((at - t) / HALF_LIVES["1h"]), 0.5 ** ((at - t) / HALF_LIVES["24h"])
        get = counts.get
        imp_24h = get("impression@24h", 0.0) * day
        return ({"i_imp_1h": math.log1p(get("impression@1h", 0.0) * hour), "i_imp_24h": math.log1p(imp_24h),
                 "i_ctr_24h": _ctr(get("click@24h", 0.0) * day, imp_24h)}, imp_24h)
