"""Avro schemas of the project's records, loaded and parsed with fastavro.

>>> schema = load("interaction")
>>> schema["name"]
'streamml.recsys.Interaction'
"""
import functools
import json
import pathlib

import fastavro

_HERE = pathlib.Path(__file__).parent


@functools.lru_cache(maxsize=None)
def load(name: str) -> dict:
    """Returns the parsed schema `schemas/<name>.avsc`."""
    path = _HERE / f"{name}.avsc"
    if not path.exists():
        known = sorted(p.stem for p in _HERE.glob("*.avsc"))
        raise ValueError(f"no schema {name!r}; known schemas: {known}")
    return fastavro.parse_schema(json.loads(path.read_text()))
