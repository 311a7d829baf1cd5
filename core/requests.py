"""A served request's model features, with the learning plane's own functions: what a server
computes when a request arrives, and what a batch of recommendations is scored with.

An impression asked for at time `now` gets what the pipeline would give an impression at that
event time: the user's and the item's profiles from the online store (`stores.online`, as the
feature stages published them), asked for their features at `now` (`core.profiles`: decayed to
`now`; an entity the store does not hold is a new one), and the impression's own fields, all
through `core.interactions.impression_features`. So a model sees at serving time exactly the
features it was trained on.
"""
from __future__ import annotations

from core.features import PROFILES
from core.profiles import TASTE_ALARMS, UserProfile
from stores.online import OnlineStore


def request_fields(request: dict, now_ms: int, profiles: dict) -> dict:
    """The impression's fields as the pipeline has them once featurised: `request` (user_id,
    item_id, item_genres, position, device) at `now_ms`, with the entity features of
    `profiles` ({kind: (state, clock ms) or None})."""
    genres = request.get("item_genres") or []
    features = {}
    for kind, (profile_type, _) in PROFILES.items():
        state, _ = profiles.get(kind) or (None, None)
        profile = profile_type(state)
        if kind == "user":
            caught_up(profile, profiles.get(TASTE_ALARMS), now_ms)
        features.update(profile.features(now_ms, genres))
    return impression_fields(request, now_ms, features)


def caught_up(user: UserProfile, alarms, now_ms: int) -> UserProfile:
    """`user` with the taste alarms before `now_ms` applied, as the user stage applies them
    before an event (`alarms`: what the store holds under `TASTE_ALARMS`, or None)."""
    if alarms:
        user.catch_up(now_ms, alarms[0])
    return user


def impression_fields(request: dict, now_ms: int, features: dict) -> dict:
    """`request` at `now_ms` with its entity `features` (user's, then item's), as featurised rows are."""
    return {"event_time": now_ms, "event_type": "impression", **request,
            "item_genres": request.get("item_genres") or [], "features": features}


def lookup(store: OnlineStore, request: dict) -> dict:
    """{kind: (state, clock ms) or None} of the request's user and item, and under
    `TASTE_ALARMS` the taste alarms' times (read with the user's profile)."""
    users = store.get("user", [request["user_id"], TASTE_ALARMS])
    return {"user": users.get(request["user_id"]), "item": store.get("item", [request["item_id"]]).get(request["item_id"]),
            TASTE_ALARMS: users.get(TASTE_ALARMS)}
