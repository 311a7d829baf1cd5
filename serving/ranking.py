"""Ranking candidates for one user, and the exploration that lets the learner see beyond its
own choices.

`score` gives each candidate the live model's P(click) at the top slot (position 0: the slots'
bias is the same for all, so it does not change the order) from the features the pipeline would
compute, or no probability when there is no model (the popularity fallback). A user the store
does not know yet is ranked first by how many of the genres they stated (onboarding) an item
has. `explore` fills the slots epsilon-greedily and gives the propensity of each item shown:
the probability that the policy put that item in that slot, for off-policy evaluation later.

>>> import random
>>> ranked = [Scored("a", (), 0.9, 5.0, {}), Scored("b", (), 0.5, 9.0, {}), Scored("c", (), 0.1, 1.0, {})]
>>> [(s.item.item_id, round(s.propensity, 3)) for s in explore(ranked, 2, 0.0, random.Random(0))]
[('a', 1.0), ('b', 1.0)]
>>> [(s.item.item_id, round(s.propensity, 3), s.explored) for s in explore(ranked, 2, 0.5, random.Random(1))]
[('a', 0.667, False), ('c', 0.25, True)]
"""
from __future__ import annotations

import dataclasses
import random

from core.interactions import impression_features
from core.profiles import ItemProfile, UserProfile
from serving.features import impression_fields
from stores.online import OnlineStore


@dataclasses.dataclass(frozen=True)
class Scored:
    item_id: str
    genres: tuple
    probability: float | None  # the model's P(click) at position 0; None without a model
    popularity: float
    features: dict  # the entity features it was scored with


@dataclasses.dataclass(frozen=True)
class Shown:
    item: Scored
    position: int
    propensity: float  # P(the policy shows this item in this slot)
    explored: bool = False  # drawn at random rather than the best left


def score(model, store: OnlineStore, user_id: str, device: str | None, candidates: dict, now_ms: int,
          stated_genres=(), known: dict | None = None) -> tuple[list[Scored], int | None]:
    """(`candidates` {item: genres} best first, the user's profile clock or None for a new user).
    Each candidate's features are `serving.features.request_fields`' (tested) over its profile
    in `known` ({item: (state, clock ms)}, read shortly before) or else in the `store`, the
    user's counters decayed once for all of them."""
    user = store.get("user", [user_id]).get(user_id)
    known = known or {}
    items = {**known, **store.get("item", [item for item in candidates if item not in known])}
    stated = set(stated_genres) if user is None else set()
    user_features = UserProfile(user[0] if user else None).features_for(now_ms, candidates.values())
    scored = []
    for (item_id, genres), features in zip(candidates.items(), user_features):
        found = items.get(item_id)
        item = ItemProfile(found[0] if found else None)
        features.update(item.features(now_ms, genres))
        request = {"user_id": user_id, "item_id": item_id, "item_genres": list(genres), "position": 0,
                   "device": device}
        x = impression_features(impression_fields(request, now_ms, features))
        probability = model.predict_proba_one(x).get(True, 0.0) if model else None
        scored.append(Scored(item_id, tuple(genres), probability, item.popularity(now_ms), features))
    scored.sort(key=lambda s: (len(stated.intersection(s.genres)),
                               s.popularity if s.probability is None else s.probability, s.item_id), reverse=True)
    return scored, user[1] if user else None


def explore(ranked: list, k: int, epsilon: float, rng: random.Random) -> list[Shown]:
    """The first `k` slots from `ranked` (best first): each slot gets the best item left, or with
    probability `epsilon` one of those left drawn uniformly."""
    left, shown = list(ranked), []
    for position in range(min(k, len(left))):
        explored = rng.random() < epsilon
        j = rng.randrange(len(left)) if explored else 0
        propensity = epsilon / len(left) + (1.0 - epsilon if j == 0 else 0.0)
        shown.append(Shown(left.pop(j), position, propensity, explored and j != 0))
    return shown
