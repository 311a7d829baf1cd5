"""The measured events: the simulator's impressions as a flat feature table.

The simulator's impressions (written to an Avro file by `simulator`) become a flat feature
table: `user_id`, `item_id`, `device` (text), `position`, `hour` (numbers), one 0/1 column
per genre, the label `clicked` (a click or a watch of the impression followed) and a `key`
column that assigns the i-th event to model key `k{i % K}` (round robin).
"""
from __future__ import annotations

import fastavro

TABLE_META = ("event_id", "event_time", "key", "clicked")  # not features
TARGET = "clicked"


def simulate_impressions(events: int, seed: int, path: str) -> list[dict]:
    """Writes the simulator's stream for `events` impressions to `path`, reads it back and
    returns one flat feature row per impression, in event order."""
    import simulator

    config = simulator.SimulatorConfig(impressions=events, seed=seed, malformed_fraction=0.0)
    simulator.write_avro(simulator.generate(config), path)
    with open(path, "rb") as f:
        records = list(fastavro.reader(f))
    positive = {r["impression_id"] for r in records if r["event_type"] in ("click", "watch")}
    genres = config.genres
    return [_feature_row(r, r["event_id"] in positive, genres)
            for r in records if r["event_type"] == "impression"]


def _feature_row(impression: dict, clicked: bool, genres) -> dict:
    shown = set(impression["item_genres"])
    row = {"event_id": impression["event_id"], "event_time": impression["event_time"],
           "user_id": impression["user_id"], "item_id": impression["item_id"],
           "device": impression["device"], "position": impression["position"],
           "hour": impression["event_time"] // 3_600_000 % 24}
    row.update({genre_column(g): float(g in shown) for g in genres})
    row[TARGET] = clicked
    return row


def genre_column(genre: str) -> str:
    return "genre_" + "".join(c if c.isalnum() else "_" for c in genre)


def genres():
    import simulator

    return simulator.SimulatorConfig().genres


def write_table(rows: list[dict], keys: int, path: str) -> None:
    """The rows with `key` = k{i % keys}, as an Avro file."""
    types = {bool: "boolean", int: "long", float: "double", str: "string"}
    first = {**rows[0], "key": ""}
    schema = {"type": "record", "name": "Event",
              "fields": [{"name": k, "type": types[type(v)]} for k, v in first.items()]}
    keyed = ({**row, "key": f"k{i % keys}"} for i, row in enumerate(rows))
    with open(path, "wb") as f:
        fastavro.writer(f, fastavro.parse_schema(schema), keyed, codec="null")


def read_examples(path: str) -> list[tuple]:
    """(key, x, y) per row, x without the id, time, key and label columns (as the pipeline)."""
    with open(path, "rb") as f:
        return [(row["key"], {k: v for k, v in row.items() if k not in TABLE_META}, row[TARGET])
                for row in fastavro.reader(f)]
