"""Where a Kafka reader is: per partition its next offset, its stop offset and the latest event
time read, claimed record by record (`transforms.io.kafka_read`)."""
from __future__ import annotations

import sys

from apache_beam.io.iobase import RestrictionProgress, RestrictionTracker

UNBOUNDED = sys.maxsize
NO_TIME = -(2 ** 62)

CHECKPOINT = ("checkpoint",)  # a claim that allows the next checkpoint (see try_split)


class PartitionsTracker(RestrictionTracker):
    """Claims (partition, offset, timestamp) positions. It splits only when the reader asks
    to checkpoint (claiming `CHECKPOINT`, then deferring): runner-initiated splits of a
    running read made Prism 2.77 deliver some records twice downstream."""

    def __init__(self, restriction):
        self._positions = {p: [nxt, stop, latest] for p, nxt, stop, latest in restriction}
        self._checkpointed = False
        self._may_checkpoint = False

    def current_restriction(self):
        return tuple((p, nxt, stop, latest) for p, (nxt, stop, latest) in sorted(self._positions.items()))

    def try_claim(self, position):
        if position == CHECKPOINT:
            self._may_checkpoint = True
            return False
        partition, offset, timestamp_ms = position
        entry = self._positions[partition]
        if self._checkpointed or offset < entry[0] or offset >= entry[1]:
            return False
        entry[0], entry[2] = offset + 1, max(entry[2], timestamp_ms)
        return True

    def try_split(self, fraction_of_remainder):
        if fraction_of_remainder != 0 or self._checkpointed or not self._may_checkpoint:
            return None
        self._checkpointed = True
        done = tuple((p, nxt, nxt, latest) for p, nxt, _, latest in self.current_restriction())
        return done, self.current_restriction()

    def check_done(self):
        left = {p: e for p, e in self._positions.items() if e[0] < e[1]}
        if left and not self._checkpointed:
            raise ValueError(f"partitions {sorted(left)} still have offsets to read")

    def current_progress(self):
        # A fraction, not work counts: the SDK turns counts into NaN progress for this reader
        # (seen with Prism 2.77) and then fails the runner's split request.
        left = [e for e in self._positions.values() if e[0] < e[1]]
        if not left:
            return RestrictionProgress(fraction=1.0)
        if self.is_bounded():
            done = sum(e[0] for e in self._positions.values())
            return RestrictionProgress(fraction=done / (done + sum(e[1] - e[0] for e in left)))
        return RestrictionProgress(fraction=0.0)

    def is_bounded(self):
        return all(e[1] != UNBOUNDED for e in self._positions.values())
