"""Point-in-time entity features of impressions, without Beam: what the feature stages of the
learning plane apply per key, and what a server computes at request time.

An impression gets the features of the events *strictly before* it: all impressions of one
instant are featurised before any event of that instant is applied to a profile, so a feature
never contains the outcome it will be used to predict, nor anything later.
"""
from __future__ import annotations

from core.profiles import ItemProfile, UserProfile
from core.records import Row

# kind: (profile, the interaction field that keys it)
PROFILES = {"user": (UserProfile, "user_id"), "item": (ItemProfile, "item_id")}


def profile_key(kind: str, key: str) -> str:
    """The store key of the `kind` profile of `key`.

    >>> profile_key("user", "u7")
    'user:u7'
    """
    return f"{kind}:{key}"


def order(row: Row) -> tuple:
    """The order in which profiles apply events: event time, then event id."""
    return (row.event_time, row.event_id)


def featurise(profile, rows: list, alarms=()) -> list:
    """Featurises the impressions among `rows` (sorted by event time, event id) and applies
    all of them to `profile`, one instant at a time; returns the rows. `alarms`: the times of
    taste alarms (sorted), applied to a user profile before each row (`UserProfile.catch_up`)."""
    out, times = [], [r.event_time for r in rows]
    for i, row in enumerate(rows):
        if alarms:
            profile.catch_up(row.event_time, alarms)
        if row.fields["event_type"] == "impression":
            row = with_features(row, profile.features(row.event_time, row.fields.get("item_genres") or ()))
        out.append(row)
        # Apply an instant's events only after every impression of that instant is featurised.
        if i + 1 == len(rows) or rows[i + 1].event_time != row.event_time:
            for done in rows[_instant_start(times, i):i + 1]:
                profile.apply(done.fields)
    return out


def with_features(row: Row, features: dict) -> Row:
    """The row with `features` added to its `fields["features"]`."""
    return Row(row.event_id, row.event_time, {**row.fields, "features": {**row.fields.get("features", {}), **features}},
               row.origin)


def _instant_start(times, i: int) -> int:
    """Index of the first of the sorted `times` equal to times[i]."""
    j = i
    while j > 0 and times[j - 1] == times[i]:
        j -= 1
    return j


def reference_features(events, alarms=()) -> dict:
    """Impression id -> features, by a plain loop over `events` (interaction dicts) in
    event-time order: what the feature stages must compute, for tests; `alarms`: taste alarm
    times applied to the user profiles.

    >>> events = [{"event_id": "a", "event_type": "impression", "event_time": 0, "user_id": "u",
    ...            "item_id": "i", "item_genres": []},
    ...           {"event_id": "b", "event_type": "impression", "event_time": 0, "user_id": "u",
    ...            "item_id": "i", "item_genres": []}]
    >>> [f["u_imp_24h"] for f in reference_features(events).values()]  # same instant: not seen
    [0.0, 0.0]
    """
    profiles = {kind: {} for kind in PROFILES}
    out = {}
    ordered = sorted(events, key=lambda e: (e["event_time"], e["event_id"]))
    times = [e["event_time"] for e in ordered]
    for i, event in enumerate(ordered):
        if alarms:
            profiles["user"].setdefault(event["user_id"], UserProfile()).catch_up(event["event_time"], alarms)
        if event["event_type"] == "impression":
            features = {}
            for kind, (profile_type, field) in PROFILES.items():
                profile = profiles[kind].setdefault(event[field], profile_type())
                features.update(profile.features(event["event_time"], event.get("item_genres") or ()))
            out[event["event_id"]] = features
        if i + 1 == len(ordered) or ordered[i + 1]["event_time"] != event["event_time"]:
            for done in ordered[_instant_start(times, i):i + 1]:
                for kind, (profile_type, field) in PROFILES.items():
                    profiles[kind].setdefault(done[field], profile_type()).apply(done)
    return out
