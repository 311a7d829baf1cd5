"""A seeded, realistic stream of user-item interactions, written to an Avro container file.

    python -m simulator --output data/interactions.avro [--impressions 20000] \\
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

import collections
import dataclasses
import heapq
import itertools
import random
from typing import Iterable, Iterator, Optional

import fastavro

import schemas
from simulator.world import POSITIONS, World, malform

ATTACK_KINDS = ("flip", "fake_clicks")
HONEST, ATTACKER, DROPPED, FAKE = "honest", "attacker", "dropped", "fake"  # who made a record, and how
EVENT_TYPES = ("impression", "click", "watch", "skip")
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
    # The events' own randomness (who visits when, what they do), when it should differ from the
    # world's (tastes, popularity, drift): e.g. a day of history of the same world. None: `seed`.
    stream_seed: Optional[int] = None
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
    # A poisoning attack: from `attack_at` of the impressions on, `attack_users` (a fraction of
    # the users, drawn apart from everything else) answer a share `attack_rate` of their
    # impressions falsely: 'flip' clicks what they would not click and ignores what they would,
    # 'fake_clicks' clicks. The rest of the stream is the clean twin's, record for record.
    attack_users: float = 0.0
    attack_at: float = 0.5
    attack_kind: str = "flip"
    attack_rate: float = 1.0

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
        _check(self.attack_kind in ATTACK_KINDS, f"attack_kind must be one of {ATTACK_KINDS}, got {self.attack_kind!r}")
        for name in ("drift_at", "late_fraction", "malformed_fraction", "attack_users", "attack_at", "attack_rate"):
            value = getattr(self, name)
            _check(isinstance(value, (int, float)) and 0.0 <= value <= 1.0,
                   f"{name} must be in [0, 1], got {value!r}")


@dataclasses.dataclass(frozen=True)
class Truth:
    """What the simulator knows about a record and a consumer must find out."""

    late: bool = False
    malformed: Optional[str] = None  # one of MALFORMED_KINDS
    poisoned: bool = False  # an attacker's impression, or an outcome it made up


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
    world = World(config, random.Random(f"{config.seed}:world"))
    events = config.seed if config.stream_seed is None else config.stream_seed
    rng = random.Random(f"{events}:stream")
    late_rng = random.Random(f"{events}:late")
    bad_rng = random.Random(f"{events}:malformed")
    window = config.attribution_window_ms
    drift_index = round(config.drift_at * config.impressions)
    attack = Attack(config, world)
    pending: list = []  # heap of (arrival_ms, sequence, record, late, kind)
    sequence = itertools.count()
    outcome_ids = itertools.count()

    def emit(record, late, kind=HONEST):
        malformed = None
        if kind != FAKE and bad_rng.random() < config.malformed_fraction:
            malformed = malform(record, bad_rng)
        return record, Truth(late=late, malformed=malformed, poisoned=kind != HONEST)

    def arrive(outcome, kind):
        late_draws = attack.rng if kind == FAKE else late_rng
        late = late_draws.random() < config.late_fraction
        arrival = outcome["event_time"] + (window + int(late_draws.uniform(0, window)) if late else 0)
        heapq.heappush(pending, (arrival, next(sequence), outcome, late, kind))

    def arrived(until):
        while pending and (until is None or pending[0][0] <= until):
            _, _, record, late, kind = heapq.heappop(pending)
            emitted = emit(record, late, kind)
            if kind != DROPPED:  # an outcome an attacker withheld: its draws are the twin's all the same
                yield emitted

    t = float(config.start_ms)
    for index in range(config.impressions):
        if index:
            t += rng.expovariate(1.0 / config.mean_gap_ms)
        now = int(t)
        yield from arrived(now)
        impression, user, item = world.impression(index, now, rng)
        drifted = index >= drift_index
        outcomes = world.outcomes(impression, user, item, drifted, outcome_ids, rng)
        poisoned = attack.applies(index, user)
        fakes = attack.instead(impression, outcomes) if poisoned else None
        for outcome in outcomes:
            arrive(outcome, HONEST if fakes is None else (ATTACKER if outcome in fakes else DROPPED))
        for fake in (fakes or ()):
            if fake not in outcomes:
                arrive(fake, FAKE)
        yield emit(impression, False, ATTACKER if poisoned else HONEST)
    yield from arrived(None)


class Attack:
    """Who attacks from when, and what they do instead of what they would (its own random stream,
    so that the attacked stream is its clean twin's but for the attackers' outcomes)."""

    def __init__(self, config: SimulatorConfig, world: World):
        self.config, self.rng = config, random.Random(f"{config.seed}:attack")
        count = round(config.attack_users * config.users)
        self.users = set(self.rng.sample(range(config.users), count))
        self.user_ids = sorted(world.user_ids[u] for u in self.users)
        self.from_index = round(config.attack_at * config.impressions)
        self.fakes = itertools.count()

    def applies(self, index: int, user: int) -> bool:
        return (index >= self.from_index and user in self.users
                and self.rng.random() < self.config.attack_rate)

    def instead(self, impression: dict, outcomes: list) -> list:
        """The attacker's outcomes of `impression` instead of the honest `outcomes` (those it
        keeps, and made-up ones)."""
        clicked = any(o["event_type"] == "click" for o in outcomes)
        if clicked and self.config.attack_kind == "flip":
            return []  # ignores what it would have clicked
        if clicked:
            return outcomes
        click = World._outcome(impression, "click", impression["event_time"] + 1_000 + self.rng.randrange(20_000),
                               None, self.fakes)
        click["event_id"] = f"atk-{click['event_id'][4:]}"
        return [click]


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


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)
