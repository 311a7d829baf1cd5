"""Sticky assignment: a salted hash of the user id into 10,000 buckets, and splits over them.

A user's bucket depends on the experiment's salt and the user id only, so every replica of the
serving process routes a user identically, and a user stays in one variant for the life of an
experiment. Treatments hold the low buckets, control the rest: raising a canary's weight moves
users from control to the canary and never back.

>>> split = Split({"control": 0.95, "canary": 0.05}, control="control")
>>> split.variant(bucket("user-7", salt="exp-1"))
'control'
>>> [bucket("user-7", salt="exp-1")] == [bucket("user-7", salt="exp-1")]
True
>>> split.ranges()
{'canary': (0, 500), 'control': (500, 10000)}
"""
from __future__ import annotations

import hashlib

BUCKETS = 10_000


def bucket(user_id: str, salt: str) -> int:
    """The user's bucket in [0, 10,000): the same in every process and on every run."""
    digest = hashlib.blake2b(f"{salt}\x00{user_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS


class Split:
    """Variants over buckets: each treatment a contiguous range from 0 up, in the order given,
    and control the buckets left. Weights are fractions of traffic; they must sum to 1.

    Growing a treatment's weight (with the treatments before it fixed) only takes buckets from
    control; `Split.moves` says which users a change of weights moves.
    """

    def __init__(self, weights: dict[str, float], control: str):
        if control not in weights:
            raise ValueError(f"the control variant {control!r} is not among {sorted(weights)}")
        negative = {name: w for name, w in weights.items() if not 0 <= w <= 1}
        if negative:
            raise ValueError(f"weights must be fractions in [0, 1], got {negative}")
        if abs(sum(weights.values()) - 1) > 1e-9:
            raise ValueError(f"weights must sum to 1, got {sum(weights.values())!r} from {weights}")
        self.control = control
        self.weights = dict(weights)
        self._bounds: list[tuple[int, str]] = []
        upper = 0
        for name, weight in weights.items():
            if name != control:
                upper += round(weight * BUCKETS)
                self._bounds.append((upper, name))
        if upper > BUCKETS:
            raise ValueError(f"treatments take {upper} of {BUCKETS} buckets")

    def variant(self, user_bucket: int) -> str:
        for upper, name in self._bounds:
            if user_bucket < upper:
                return name
        return self.control

    def ranges(self) -> dict[str, tuple[int, int]]:
        """Each variant's buckets as [low, high)."""
        ranges, low = {}, 0
        for upper, name in self._bounds:
            ranges[name] = (low, upper)
            low = upper
        ranges[self.control] = (low, BUCKETS)
        return ranges

    def moves(self, new: Split) -> dict[tuple[str, str], int]:
        """How many buckets change variant from this split to `new`, by (from, to)."""
        moved: dict[tuple[str, str], int] = {}
        for b in range(BUCKETS):
            before, after = self.variant(b), new.variant(b)
            if before != after:
                moved[(before, after)] = moved.get((before, after), 0) + 1
        return moved
