"""Interactions of the content-recommendation example, without Beam: what makes a record
usable, and the model features of an impression (the same at learning and at serving time).
"""
from __future__ import annotations

import datetime
import json

from core.records import PREDICT, DeadLetter, Example, Row

POSITIVE = ("click", "watch")
POSITIONS = 10


def invalid_reason(fields: dict) -> str | None:
    """Why an interaction record is unusable, or None when it is valid.

    >>> shown = {"event_id": "imp-1", "event_type": "impression", "event_time": 5,
    ...          "user_id": "u", "item_id": "i", "position": 2}
    >>> invalid_reason(shown) is None
    True
    >>> invalid_reason({**shown, "event_id": "c-1", "event_type": "click"})
    'click without impression_id'
    """
    kind = fields.get("event_type")
    if kind not in ("impression", *POSITIVE, "skip"):
        return f"unknown event_type {kind!r}"
    for name in ("event_id", "user_id", "item_id"):
        if not fields.get(name):
            return f"empty {name}"
    if not isinstance(fields.get("event_time"), int) or fields["event_time"] < 0:
        return f"bad event_time {fields.get('event_time')!r}"
    if kind == "impression":
        if not isinstance(fields.get("position"), int) or not 0 <= fields["position"] < POSITIONS:
            return f"bad position {fields.get('position')!r}"
    elif not fields.get("impression_id"):
        return f"{kind} without impression_id"
    if kind == "watch" and (fields.get("watch_seconds") or 0.0) < 0:
        return f"negative watch_seconds {fields['watch_seconds']!r}"
    return None


def impression_features(fields: dict) -> dict:
    """Model features of an impression: ids and context as text categoricals, genres as 1.0.

    >>> impression_features({"user_id": "u1", "item_id": "i9", "device": "tv", "position": 3,
    ...                      "event_time": 3_600_000, "item_genres": ["drama"]})
    {'user_id': 'u1', 'item_id': 'i9', 'device': 'tv', 'position': '3', 'hour': '1', 'genre_drama': 1.0}
    """
    x = context_features(fields)
    x.update(genre_indicators(fields.get("item_genres") or ()))
    x.update(fields.get("features") or {})  # entity features, when transforms.features added them
    return x


def context_features(fields: dict) -> dict:
    """The categoricals of `impression_features`: ids, device, slot and hour, as text."""
    hour = datetime.datetime.fromtimestamp(fields["event_time"] / 1000, datetime.timezone.utc).hour
    return {"user_id": fields["user_id"], "item_id": fields["item_id"],
            "device": fields.get("device") or "unknown", "position": str(fields["position"]), "hour": str(hour)}


def genre_indicators(genres) -> dict:
    """The genre features of `impression_features`: 1.0 per genre of the item."""
    return {f"genre_{g}": 1.0 for g in genres}


def served_example(row: Row, model_key: str = "default") -> Example:
    """The prediction request of an impression, at its own time (the label comes later)."""
    return Example(event_id=row.event_id, event_time=row.event_time, x=impression_features(row.fields),
                   model_key=model_key, mode=PREDICT, served_by=row.fields.get("model_key"))


def dead_letter(stage: str, reason: str, row: Row) -> DeadLetter:
    """A dead letter for an interaction row: its fields as JSON, its time and origin."""
    payload = json.dumps(row.fields, default=str, sort_keys=True).encode()
    return DeadLetter(stage=stage, reason=reason, payload=payload, event_time=row.event_time, origin=row.origin)
