"""A seeded, realistic stream of user-item interactions, written to an Avro container file.

    python -m pipelines.simulate --output data/interactions.avro [--impressions 20000] \\
        [--users 2000] [--items 500] [--seed 7] [--late-fraction 0.01] \\
        [--malformed-fraction 0.005]

Every record matches `schemas/interaction.avsc`. The file is in *arrival* order: impressions
and their outcomes merged by event time, except for late outcomes, which keep their true
event time but arrive after `attribution_window_ms` to `2 * attribution_window_ms` more of
stream time.

The world:

- users have latent genre tastes (a Dirichlet(0.4) vector over the genres), a lognormal
  activity level (a few users are far more active than most) and a device
  ('mobile', 'tv' or 'web');
- items have 1-3 genres and a Zipf popularity that picks which items are shown and also
  raises their click chance;
- an impression shows one item to one user at a position 0-9; the click probability is
  logistic in the user's taste for the item's genres, the item's popularity, the position
  (lower is better) and the time of day (evenings, UTC, are better);
- a click follows within seconds to minutes (lognormal delay, capped at half the attribution
  window); a click may be followed by a 'watch' with `watch_seconds`; some impressions
  without a click get a quick 'skip'; most get no outcome at all;
- at `drift_at` of the stream (a fraction of the impressions) every user's tastes rotate
  to other genres (taste[g] becomes the old taste[g + k], k != 0 per user), so a model
  must recover.

Malformed records (a `malformed_fraction` of all records) are schema-valid, so fastavro
writes them, but semantically invalid; `malformed_kind` tells which check each one fails:

- 'empty_user_id': user_id is '';
- 'empty_item_id': item_id is '';
- 'negative_event_time': event_time < 0;
- 'bad_position': an impression with position None or outside 0-9;
- 'missing_impression_id': an outcome with impression_id None;
- 'negative_watch_seconds': a watch with watch_seconds < 0.

Outcomes of a malformed impression are still emitted, well-formed and pointing to its id.
Separate random streams drive the world, the interactions, lateness and malformation, so
changing `late_fraction` or `malformed_fraction` leaves the rest of the stream unchanged.
"""
from __future__ import annotations

import argparse
import bisect
import collections
import dataclasses
import datetime
import heapq
import itertools
import math
import random
from typing import Iterable, Iterator, Optional

import fastavro

import schemas

EVENT_TYPES = ("impression", "click", "watch", "skip")
DEVICES = ("mobile", "tv", "web")
POSITIONS = 10
MALFORMED_KINDS = ("empty_user_id", "empty_item_id", "negative_event_time", "bad_position",
                   "missing_impression_id", "negative_watch_seconds")
DEFAULT_GENRES = ("action", "animation", "comedy", "crime", "documentary", "drama",
                  "family", "fantasy", "horror", "romance", "sci-fi", "thriller")
START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


@dataclasses.dataclass(frozen=True)
class SimulatorConfig:
    """What to simulate. All randomness derives from `seed`.

    >>> SimulatorConfig().impressions, SimulatorConfig(seed=3).seed
    (20000, 3)
    >>> SimulatorConfig(users=0)
    Traceback (most recent call last):
    ...
    ValueError: users must be >= 1, got 0
    """

    seed: int = 7
    users: int = 2000
    items: int = 500
    genres: tuple = DEFAULT_GENRES
    impressions: int = 20000
    start_ms: int = START_MS
    mean_gap_ms: float = 600.0  # the default 20k impressions span about 3.3 hours
    drift_at: float = 0.5
    late_fraction: float = 0.01
    malformed_fraction: float = 0.005
    attribution_window_ms: int = 30 * 60 * 1000

    def __post_init__(self):
        object.__setattr__(self, "genres", tuple(self.genres))
        for name in ("seed", "users", "items", "impressions", "start_ms",
                     "attribution_window_ms"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"{name} must be an int, got {value!r}")
        _check(self.users >= 1, f"users must be >= 1, got {self.users}")
        _check(self.items >= 1, f"items must be >= 1, got {self.items}")
        _check(self.impressions >= 0, f"impressions must be >= 0, got {self.impressions}")
        _check(self.start_ms >= 0, f"start_ms must be >= 0, got {self.start_ms}")
        _check(len(self.genres) >= 2, f"need at least 2 genres, got {self.genres!r}")
        _check(all(isinstance(g, str) and g for g in self.genres),
               f"genres must be non-empty strings, got {self.genres!r}")
        _check(len(set(self.genres)) == len(self.genres), f"genres repeat: {self.genres!r}")
        _check(isinstance(self.mean_gap_ms, (int, float)) and self.mean_gap_ms > 0,
               f"mean_gap_ms must be a number > 0, got {self.mean_gap_ms!r}")
        _check(self.attribution_window_ms >= 10_000,
               f"attribution_window_ms must be >= 10000, got {self.attribution_window_ms}")
        for name in ("drift_at", "late_fraction", "malformed_fraction"):
            value = getattr(self, name)
            _check(isinstance(value, (int, float)) and 0.0 <= value <= 1.0,
                   f"{name} must be in [0, 1], got {value!r}")


@dataclasses.dataclass(frozen=True)
class Truth:
    """What the simulator knows about a record and a consumer must find out."""

    late: bool = False
    malformed: Optional[str] = None  # one of MALFORMED_KINDS


def generate(config: Optional[SimulatorConfig] = None) -> Iterator[dict]:
    """Interaction records in arrival order; the same config gives the same records.

    `config` None means `SimulatorConfig()`.

    >>> records = list(generate(SimulatorConfig(users=5, items=10, impressions=3)))
    >>> first = records[0]
    >>> first["event_id"], first["event_type"], first["event_time"] == START_MS
    ('imp-000000000', 'impression', True)
    >>> sum(r["event_type"] == "impression" for r in records)
    3
    """
    for record, _ in generate_with_truth(config):
        yield record


def generate_with_truth(config: Optional[SimulatorConfig] = None
                        ) -> Iterator[tuple[dict, Truth]]:
    """Like `generate`, with each record's `Truth` (late? malformed, and how?).

    >>> config = SimulatorConfig(users=5, items=10, impressions=200, malformed_fraction=0.1)
    >>> truths = [t for _, t in generate_with_truth(config)]
    >>> any(t.malformed for t in truths), all(t.malformed in (None,) + MALFORMED_KINDS
    ...                                       for t in truths)
    (True, True)
    """
    config = SimulatorConfig() if config is None else config
    if not isinstance(config, SimulatorConfig):
        raise ValueError(f"config must be a SimulatorConfig, got {type(config).__name__}")
    world = _World(config, random.Random(f"{config.seed}:world"))
    rng = random.Random(f"{config.seed}:stream")
    late_rng = random.Random(f"{config.seed}:late")
    bad_rng = random.Random(f"{config.seed}:malformed")
    window = config.attribution_window_ms
    drift_index = round(config.drift_at * config.impressions)
    pending: list = []  # heap of (arrival_ms, sequence, record, late)
    sequence = itertools.count()
    outcome_ids = itertools.count()

    def emit(record, late):
        malformed = None
        if bad_rng.random() < config.malformed_fraction:
            malformed = _malform(record, bad_rng)
        return record, Truth(late=late, malformed=malformed)

    t = float(config.start_ms)
    for index in range(config.impressions):
        if index:
            t += rng.expovariate(1.0 / config.mean_gap_ms)
        now = int(t)
        while pending and pending[0][0] <= now:
            _, _, record, late = heapq.heappop(pending)
            yield emit(record, late)
        impression, user, item = world.impression(index, now, rng)
        drifted = index >= drift_index
        for outcome in world.outcomes(impression, user, item, drifted, outcome_ids, rng):
            late = late_rng.random() < config.late_fraction
            arrival = outcome["event_time"]
            if late:
                arrival += window + int(late_rng.uniform(0, window))
            heapq.heappush(pending, (arrival, next(sequence), outcome, late))
        yield emit(impression, False)
    while pending:
        _, _, record, late = heapq.heappop(pending)
        yield emit(record, late)


def malformed_kind(record: dict) -> Optional[str]:
    """The first semantic check `record` fails (one of MALFORMED_KINDS), or None if valid.

    >>> good = {"event_type": "watch", "event_time": 5, "user_id": "u1", "item_id": "i1",
    ...         "impression_id": "imp-1", "position": None, "watch_seconds": 3.0}
    >>> malformed_kind(good) is None
    True
    >>> malformed_kind(dict(good, watch_seconds=-3.0))
    'negative_watch_seconds'
    """
    if not record.get("user_id"):
        return "empty_user_id"
    if not record.get("item_id"):
        return "empty_item_id"
    if record.get("event_time") is None or record["event_time"] < 0:
        return "negative_event_time"
    if record.get("event_type") == "impression":
        position = record.get("position")
        if position is None or not 0 <= position < POSITIONS:
            return "bad_position"
    elif not record.get("impression_id"):
        return "missing_impression_id"
    if record.get("event_type") == "watch" and (record.get("watch_seconds") or 0.0) < 0:
        return "negative_watch_seconds"
    return None


def write_avro(records: Iterable[dict], path: str, codec: str = "deflate") -> int:
    """Writes interaction records to an Avro container file; returns how many were written.

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "tiny.avro")
    >>> write_avro(generate(SimulatorConfig(users=3, items=4, impressions=5)), path) >= 5
    True
    """
    counter = collections.Counter()

    def counted():
        for record in records:
            counter["n"] += 1
            yield record

    with open(path, "wb") as f:
        fastavro.writer(f, schemas.load("interaction"), counted(), codec=codec)
    return counter["n"]


def parse_args(argv=None) -> argparse.Namespace:
    defaults = SimulatorConfig()
    parser = argparse.ArgumentParser(prog="python -m pipelines.simulate",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", help="Avro file to write.")
    parser.add_argument("--kafka", metavar="BOOTSTRAP",
                        help="Produce to Kafka at these bootstrap servers instead of a file.")
    parser.add_argument("--topic", default="interactions",
                        help="Kafka topic with --kafka (default interactions)")
    parser.add_argument("--partitions", type=int, default=3,
                        help="partitions of a topic that --kafka creates (default 3)")
    parser.add_argument("--rate", type=float,
                        help="records/s with --kafka (default: as fast as possible)")
    parser.add_argument("--impressions", type=int, default=defaults.impressions,
                        help=f"number of impressions (default {defaults.impressions})")
    parser.add_argument("--users", type=int, default=defaults.users,
                        help=f"number of users (default {defaults.users})")
    parser.add_argument("--items", type=int, default=defaults.items,
                        help=f"number of items (default {defaults.items})")
    parser.add_argument("--seed", type=int, default=defaults.seed,
                        help=f"random seed (default {defaults.seed})")
    parser.add_argument("--late-fraction", type=float, default=defaults.late_fraction,
                        help=f"fraction of outcomes that arrive late "
                             f"(default {defaults.late_fraction})")
    parser.add_argument("--malformed-fraction", type=float,
                        default=defaults.malformed_fraction,
                        help=f"fraction of records that are malformed "
                             f"(default {defaults.malformed_fraction})")
    parser.add_argument("--drift-at", type=float, default=defaults.drift_at,
                        help=f"fraction of the stream at which tastes drift "
                             f"(default {defaults.drift_at})")
    parser.add_argument("--mean-gap-ms", type=float, default=defaults.mean_gap_ms,
                        help=f"mean time between impressions in ms "
                             f"(default {defaults.mean_gap_ms:g})")
    parser.add_argument("--codec", choices=("deflate", "null"), default="deflate",
                        help="Avro block codec (default deflate)")
    args = parser.parse_args(argv)
    if (args.output is None) == (args.kafka is None):
        parser.error("give exactly one of --output FILE and --kafka BOOTSTRAP")
    try:
        args.config = SimulatorConfig(
            seed=args.seed, users=args.users, items=args.items, impressions=args.impressions,
            late_fraction=args.late_fraction, malformed_fraction=args.malformed_fraction,
            drift_at=args.drift_at, mean_gap_ms=args.mean_gap_ms)
    except ValueError as e:
        parser.error(str(e))
    return args


def run(argv=None) -> str:
    """Writes the stream the flags describe; prints and returns a one-line summary."""
    args = parse_args(argv)
    stats = _Stats()
    records = stats.observe(generate_with_truth(args.config))
    if args.kafka:
        from transforms import kafka

        kafka.ensure_topic(args.kafka, args.topic, args.partitions)
        count = kafka.produce(records, args.kafka, args.topic, "interaction", "user_id", rate=args.rate)
        target = f"Kafka topic {args.topic!r}"
    else:
        count = write_avro(records, args.output, codec=args.codec)
        target = args.output
    line = f"wrote {count} records to {target}: {stats.summary()}"
    print(line)
    return line


class _Stats:
    """Counts what passes through: records by type, malformed, late, and the time span."""

    def __init__(self):
        self.by_type = collections.Counter()
        self.malformed = self.late = 0
        self.first = self.last = None

    def observe(self, labelled):
        for record, truth in labelled:
            self.by_type[record["event_type"]] += 1
            self.malformed += truth.malformed is not None
            self.late += truth.late
            if truth.malformed is None:
                t = record["event_time"]
                self.first = t if self.first is None else min(self.first, t)
                self.last = t if self.last is None else max(self.last, t)
            yield record

    def summary(self) -> str:
        types = " ".join(f"{t}={self.by_type[t]}" for t in EVENT_TYPES)
        impressions = self.by_type["impression"]
        ctr = self.by_type["click"] / impressions if impressions else 0.0
        span = "empty"
        if self.first is not None:
            hours = (self.last - self.first) / 3_600_000
            span = f"{_iso(self.first)} .. {_iso(self.last)} ({hours:.2f} h)"
        return (f"{types} (click rate {ctr:.3f}); malformed={self.malformed} "
                f"late={self.late}; event time {span}")


class _World:
    """Users and items, drawn once per seed, and the behaviour that links them."""

    def __init__(self, config: SimulatorConfig, rng: random.Random):
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
        user = bisect.bisect_right(self.user_cum, rng.random() * self.user_cum[-1])
        item = bisect.bisect_right(self.item_cum, rng.random() * self.item_cum[-1])
        user, item = min(user, len(self.user_cum) - 1), min(item, len(self.item_cum) - 1)
        record = {
            "event_id": f"imp-{index:09d}", "event_type": "impression", "event_time": now,
            "user_id": self.user_ids[user], "item_id": self.item_ids[item],
            "item_genres": [self.config.genres[g] for g in self.item_genres[item]],
            "impression_id": None, "position": rng.randrange(POSITIONS),
            "device": self.devices[user], "watch_seconds": None,
        }
        return record, user, item

    def outcomes(self, impression: dict, user: int, item: int, drifted: bool, ids,
                 rng: random.Random) -> list:
        """The outcomes that follow an impression of `item` to `user`, in event-time order."""
        taste = (self.drifted if drifted else self.tastes)[user]
        affinity = sum(taste[g] for g in self.item_genres[item])
        now, window = impression["event_time"], self.config.attribution_window_ms
        hour = (now // 3_600_000) % 24
        logit = (-3.9 + 6.0 * affinity + 1.5 * self.item_pop[item]
                 - 0.12 * impression["position"] + 0.3 * math.cos(2 * math.pi * (hour - 21) / 24))
        out = []
        if rng.random() < 1.0 / (1.0 + math.exp(-logit)):
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
            "device": impression["device"], "watch_seconds": watch_seconds,
        }


def _malform(record: dict, rng: random.Random) -> str:
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


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _iso(ms: int) -> str:
    """Epoch milliseconds as ISO-8601 UTC text.

    >>> _iso(START_MS)
    '2026-01-01T00:00:00Z'
    """
    when = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


if __name__ == "__main__":
    run()
