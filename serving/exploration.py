"""Exploration: the slots of a ranking filled epsilon-greedily, each shown item with its
propensity (the probability that the policy put that item in that slot), so that the learner
sees beyond its own choices and later off-policy evaluation is possible.

>>> import random
>>> from core.ranking import Scored
>>> ranked = [Scored("a", (), 0.9, 5.0, {}), Scored("b", (), 0.5, 9.0, {}), Scored("c", (), 0.1, 1.0, {})]
>>> [(s.item.item_id, round(s.propensity, 3)) for s in explore(ranked, 2, 0.0, random.Random(0))]
[('a', 1.0), ('b', 1.0)]
>>> [(s.item.item_id, round(s.propensity, 3), s.explored) for s in explore(ranked, 2, 0.5, random.Random(1))]
[('a', 0.667, False), ('c', 0.25, True)]
"""
from __future__ import annotations

import random
from typing import NamedTuple

from core.ranking import Scored


class Shown(NamedTuple):  # a tuple: a lookup makes ten, and a frozen dataclass took 3.5 times as long to make
    item: Scored
    position: int
    propensity: float  # P(the policy shows this item in this slot)
    explored: bool = False  # drawn at random rather than the best left


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
