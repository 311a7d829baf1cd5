"""The simulated world: users with drifting genre tastes, items with a Zipf popularity, and the
behaviour that links them (who is shown what, who clicks, watches or skips, and when)."""
from __future__ import annotations

import bisect
import itertools
import math
import random

DEVICES = ("mobile", "tv", "web")
POSITIONS = 10
# What a serving process logs with the impressions it served (schemas/interaction.avsc): the
# simulated world's impressions were not served by one.
NOT_SERVED = {"model_key": None, "model_version": None, "propensity": None, "served_features": None,
              "served_probability": None, "experiment": None, "variant": None, "bucket": None,
              "assignment_probability": None, "serve_ms": None, "error": None}


class World:
    """Users and items, drawn once per seed, and the behaviour that links them."""

    def __init__(self, config, rng: random.Random):
        self.config = config
        genres = config.genres
        n = len(genres)
        self.user_ids = [f"u{u:05d}" for u in range(config.users)]
        self.devices = rng.choices(DEVICES, weights=(0.5, 0.3, 0.2), k=config.users)
        self.tastes = [_dirichlet(rng, 0.4, n) for _ in range(config.users)]
        shifts = [rng.randrange(1, n) for _ in range(config.users)]
        self.drifted = [[taste[(g + k) % n] for g in range(n)]
                        for taste, k in zip(self.tastes, shifts)]
        activity = [rng.lognormvariate(0.0, 1.0) for _ in range(config.users)]
        self.user_cum = list(itertools.accumulate(activity))

        self.item_ids = [f"i{i:05d}" for i in range(config.items)]
        self.item_genres = [sorted(rng.sample(range(n), rng.choices((1, 2, 3),
                                                                    (0.5, 0.35, 0.15))[0]))
                            for _ in range(config.items)]
        ranks = list(range(1, config.items + 1))
        rng.shuffle(ranks)
        self.item_cum = list(itertools.accumulate(1.0 / r for r in ranks))
        log_items = math.log(config.items) if config.items > 1 else 1.0
        self.item_pop = [1.0 - math.log(r) / log_items for r in ranks]  # 1 = most popular

    def impression(self, index: int, now: int, rng: random.Random) -> tuple[dict, int, int]:
        """An impression at time `now`, with the indices of its user and item."""
        user = self.pick_user(rng)
        item = bisect.bisect_right(self.item_cum, rng.random() * self.item_cum[-1])
        item = min(item, len(self.item_cum) - 1)
        record = {
            "event_id": f"imp-{index:09d}", "event_type": "impression", "event_time": now,
            "user_id": self.user_ids[user], "item_id": self.item_ids[item],
            "item_genres": [self.config.genres[g] for g in self.item_genres[item]],
            "impression_id": None, "position": rng.randrange(POSITIONS),
            "device": self.devices[user], "watch_seconds": None, **NOT_SERVED,
        }
        return record, user, item

    def pick_user(self, rng: random.Random) -> int:
        """A user, drawn by activity."""
        return min(bisect.bisect_right(self.user_cum, rng.random() * self.user_cum[-1]), len(self.user_cum) - 1)

    def click_probability(self, user: int, item: int, position: int, now: int, drifted: bool) -> float:
        """The true P(click) of `item` shown to `user` in slot `position` at time `now`."""
        taste = (self.drifted if drifted else self.tastes)[user]
        affinity = sum(taste[g] for g in self.item_genres[item])
        hour = (now // 3_600_000) % 24
        logit = (-3.9 + 6.0 * affinity + 1.5 * self.item_pop[item]
                 - 0.12 * position + 0.3 * math.cos(2 * math.pi * (hour - 21) / 24))
        return 1.0 / (1.0 + math.exp(-logit))

    def oracle(self, user: int, now: int, drifted: bool, k: int) -> list[float]:
        """The true P(click) in slots 0..k-1 of the best k items for `user` at `now`: what a
        policy that knew the truth would show (the slot's effect is the same for every item, so
        the best items are the best in any slot)."""
        best = sorted(range(len(self.item_ids)), key=lambda i: -self.click_probability(user, i, 0, now, drifted))[:k]
        return [self.click_probability(user, item, slot, now, drifted) for slot, item in enumerate(best)]

    def outcomes(self, impression: dict, user: int, item: int, drifted: bool, ids,
                 rng: random.Random) -> list:
        """The outcomes that follow an impression of `item` to `user`, in event-time order."""
        taste = (self.drifted if drifted else self.tastes)[user]
        affinity = sum(taste[g] for g in self.item_genres[item])
        now, window = impression["event_time"], self.config.attribution_window_ms
        out = []
        if rng.random() < self.click_probability(user, item, impression["position"], now, drifted):
            delay = min(rng.lognormvariate(math.log(8_000), 1.0), window / 2)
            click_time = now + max(200, int(delay))
            out.append(self._outcome(impression, "click", click_time, None, ids))
            if rng.random() < 0.35 + 0.4 * min(1.0, 2.0 * affinity):
                room = now + window - 1 - click_time
                watch_time = click_time + int(min(rng.lognormvariate(math.log(5_000), 0.7), room))
                seconds = round(rng.lognormvariate(math.log(60.0 * (1 + 2 * affinity)), 0.8), 1)
                out.append(self._outcome(impression, "watch", watch_time, seconds, ids))
        elif rng.random() < 0.15:
            delay = min(rng.lognormvariate(math.log(1_500), 0.5), window / 2)
            out.append(self._outcome(impression, "skip", now + max(100, int(delay)), None, ids))
        return out

    @staticmethod
    def _outcome(impression, event_type, event_time, watch_seconds, ids) -> dict:
        return {
            "event_id": f"out-{next(ids):09d}", "event_type": event_type,
            "event_time": event_time, "user_id": impression["user_id"],
            "item_id": impression["item_id"], "item_genres": list(impression["item_genres"]),
            "impression_id": impression["event_id"], "position": None,
            "device": impression["device"], "watch_seconds": watch_seconds, **NOT_SERVED,
        }


def malform(record: dict, rng: random.Random) -> str:
    """Breaks `record` in place in one way that applies to its type; returns the kind."""
    kinds = ["empty_user_id", "empty_item_id", "negative_event_time"]
    if record["event_type"] == "impression":
        kinds.append("bad_position")
    else:
        kinds.append("missing_impression_id")
    if record["event_type"] == "watch":
        kinds.append("negative_watch_seconds")
    kind = rng.choice(kinds)
    if kind == "empty_user_id":
        record["user_id"] = ""
    elif kind == "empty_item_id":
        record["item_id"] = ""
    elif kind == "negative_event_time":
        record["event_time"] = -record["event_time"]
    elif kind == "bad_position":
        record["position"] = rng.choice((None, -1, POSITIONS + rng.randrange(90)))
    elif kind == "missing_impression_id":
        record["impression_id"] = None
    else:
        record["watch_seconds"] = -abs(record["watch_seconds"]) - 1.0
    return kind


def _dirichlet(rng: random.Random, alpha: float, n: int) -> list:
    """A Dirichlet(alpha, ..., alpha) sample of length n.

    >>> v = _dirichlet(random.Random(1), 0.4, 5)
    >>> len(v), round(sum(v), 9)
    (5, 1.0)
    """
    draws = [rng.gammavariate(alpha, 1.0) for _ in range(n)]
    total = sum(draws) or 1.0
    return [d / total for d in draws]
