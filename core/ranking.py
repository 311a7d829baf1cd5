"""Ranking candidate items for one user, the same for a server answering now and for a batch
of recommendations computed ahead: what both serving paths share.

`popular` picks the candidates: the `n` items with the most impressions of the recent past (as
the online store's item profiles tell, decayed to a time), with their genres and profiles.
`score` gives each candidate the model's P(click) at the top slot (position 0: the slots' bias
is the same for all, so it does not change the order) from the features the pipeline would
compute, or no probability when there is no model (the popularity fallback). A user the store
does not know yet is ranked first by how many of the genres they stated (onboarding) an item
has.

>>> from stores.online import open_online_store
>>> store = open_online_store(":memory:")
>>> shown = lambda t: {"event_type": "impression", "event_time": t, "item_genres": ["drama"]}
>>> a, b = ItemProfile(), ItemProfile()
>>> for t in (0, 1, 2):
...     a.apply(shown(t))
>>> b.apply(shown(0))
>>> store.put("item", {"a": (a.state(), 2), "b": (b.state(), 0)})
>>> top = popular(store, 1, now_ms=10)
>>> [(c.item_id, c.genres, round(c.popularity, 3)) for c in top.items], list(top.profiles)
([('a', ('drama',), 3.0)], ['a'])
>>> ranked, user_clock = score(None, store, "new-user", None, top.candidates(), 10, known=top.profiles)
>>> [(s.item_id, s.probability) for s in ranked], user_clock
([('a', None)], None)
"""
from __future__ import annotations

import dataclasses
import heapq
from typing import NamedTuple

from core.interactions import context_features, genre_indicators, impression_features
from core.profiles import TASTE_ALARMS, ItemProfile, UserProfile
from core.requests import caught_up, impression_fields
from models import linear
from models.zoo import categorical
from stores.online import OnlineStore


@dataclasses.dataclass(frozen=True)
class Candidate:
    item_id: str
    genres: tuple
    popularity: float  # impressions over about the last day, decayed to the time it was picked


@dataclasses.dataclass(frozen=True)
class Popular:
    """The popular items, best first, as of `now_ms`; the genres of every item in the store;
    the popular items' profiles {item: (state, clock ms)}, as read."""

    items: list
    genres: dict
    profiles: dict
    now_ms: int

    def candidates(self, extra=()) -> dict:
        """{item: genres} of the popular items, best first, then of the `extra` items not among them."""
        out = {c.item_id: c.genres for c in self.items}
        out.update((item, self.genres.get(item, ())) for item in extra if item not in out)
        return out


def popular(store: OnlineStore, n: int, now_ms: int) -> Popular:
    """The `n` items of `store` with the most impressions as of `now_ms` (ties by item id)."""
    genres, scored, stored = {}, [], {}
    for item, state, clock in store.scan("item"):
        profile = ItemProfile(state)
        genres[item], stored[item] = profile.genres, (state, clock)
        scored.append(Candidate(item, profile.genres, profile.popularity(now_ms)))
    items = heapq.nlargest(n, scored, key=lambda c: (c.popularity, c.item_id))
    return Popular(items, genres, {c.item_id: stored[c.item_id] for c in items}, now_ms)


class Scored(NamedTuple):  # a tuple: a ranking makes 100 of them
    item_id: str
    genres: tuple
    probability: float | None  # the model's P(click) at position 0; None without a model
    popularity: float
    features: dict  # the entity features it was scored with


def score(model, store: OnlineStore, user_id: str, device: str | None, candidates: dict, now_ms: int,
          stated_genres=(), known: dict | None = None) -> tuple[list[Scored], int | None]:
    """(`candidates` {item: genres} best first, the user's profile clock or None for a new user).
    Each candidate's features are `core.requests.request_fields`' (tested) over its profile
    in `known` ({item: (state, clock ms)}, read shortly before) or else in the `store`, the
    user's counters decayed once for all of them. A model of the recommender's shape is asked
    term by term (`models.linear`), the terms the candidates share computed once."""
    users = store.get("user", [user_id, TASTE_ALARMS])
    user, alarms = users.get(user_id), users.get(TASTE_ALARMS)
    known = known or {}
    items = {**known, **store.get("item", [item for item in candidates if item not in known])}
    stated = set(stated_genres) if user is None else set()
    own, genre_features = caught_up(UserProfile(user[0] if user else None), alarms, now_ms).features_for(
        now_ms, candidates.values())
    request = {"user_id": user_id, "item_id": None, "position": 0, "device": device}
    predict = _term_by_term(terms, own, context_features({**request, "event_time": now_ms})) \
        if model and (terms := linear.terms_of(model)) else _one_by_one(model, request, now_ms)
    scored = []
    for (item_id, genres), user_genre in zip(candidates.items(), genre_features):
        found = items.get(item_id)
        item_features, popularity = ItemProfile(found[0] if found else None).features_and_popularity(now_ms)
        features = {**own, **user_genre, **item_features}
        probability = predict(item_id, genres, user_genre, item_features, features) if model else None
        scored.append(Scored(item_id, tuple(genres), probability, popularity, features))
    scored.sort(key=lambda s: (len(stated.intersection(s.genres)),
                               s.popularity if s.probability is None else s.probability, s.item_id), reverse=True)
    return scored, user[1] if user else None


def _one_by_one(model, request: dict, now_ms: int):
    """P(click) of a candidate by the model's `predict_proba_one` of its impression's features."""
    def predict(item_id, genres, user_genre, item_features, features):
        fields = impression_fields({**request, "item_id": item_id, "item_genres": list(genres)}, now_ms, features)
        return model.predict_proba_one(impression_features(fields)).get(True, 0.0)
    return predict


def _term_by_term(terms: linear.Terms, own: dict, context: dict):
    """P(click) of a candidate from the model's terms, in the order of `impression_features`
    (context, genre indicators, then the user's, the user x genre and the item's features). The
    sum up to the item's terms is the same for every candidate of a genre set: it is computed
    once per set, and the user's own terms once per ranking."""
    own_terms, by_genres = terms.numeric(own), {}

    def predict(item_id, genres, user_genre, item_features, features):
        key = tuple(genres)
        if key not in by_genres:
            by_genres[key] = terms.partial_sum(terms.numeric(genre_indicators(genres)) + own_terms
                                               + terms.numeric(user_genre))
        return terms.probability(terms.numeric(item_features),
                                 terms.categorical(categorical({**context, "item_id": item_id})), start=by_genres[key])
    return predict
