"""Beam's state cache weighs our state values as Beam would, without its per-call walk over every
module's globals (`transforms.statecache`)."""
from apache_beam.runners.worker import statecache as beams

import transforms  # noqa: F401  (installs the cheap weighing)
from core.records import Example, Row
from transforms import statecache
from transforms.features.streaming import _pack


def _state_values():
    row = Row("e1", 1_700_000_000_000, {"event_type": "impression", "user_id": "u1", "item_genres": ["a", "b"],
                                        "features": {"u_clicks": 3.0, "u_since_last": 12.5}}, (("t", 0, 5, 5),))
    example = Example("e1", 1_700_000_000_000, {"user_id": "u1", "x": 0.5}, True, "recommender")
    return [
        b"\x00" * 4096,                                           # a signed model blob
        (b"\x01" * 2048, (1_700_000_000_000, "e1"), ((example.event_id, example.event_time, example.x),)),
        tuple(_pack(row) for _ in range(20)),                     # rows a firing left waiting
        [row, row],                                               # a bag's cached rows
        ({"clicks": 3, "genres": {"a": 2}}, (1_700_000_000_000, "e1")),  # a profile and its clock
        None, 12, "u1",
    ]


def test_our_state_values_weigh_what_beam_weighs_them():
    for value in _state_values():
        assert statecache.deep_size(value) == statecache.BEAMS_DEEP_SIZE(value), value


def test_importing_transforms_installs_the_cheap_weighing():
    """(How much cheaper: `python -m benchmarks.statecache`; a benchmark, not a timed test.)"""
    assert beams.get_deep_size is statecache.deep_size
