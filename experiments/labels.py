"""The experiment owner's labels: each routed impression with its outcome, once its attribution
window has closed in event time, by the learning plane's rule (`LabelImpressions`): clicked or
watched at or after the impression and within the window.

The clock is a watermark, as the learning plane's reader keeps one: the oldest of each
partition's newest event time, minus the allowed lateness, so an outcome up to that late still
counts. A partition that has had nothing for `idle_s` seconds (of the wall clock) while others
moved on does not hold the clock back.

>>> labeller = Labeller(window_ms=1000, lateness_ms=0)
>>> labeller.add({"event_type": "impression", "event_id": "i1", "event_time": 0, "user_id": "u",
...               "experiment": "ab", "variant": "b", "served_probability": 0.2})
[]
>>> labeller.add({"event_type": "click", "event_id": "c1", "impression_id": "i1", "event_time": 500})
[]
>>> [(r["variant"], r["clicked"]) for r in labeller.add({"event_type": "skip", "event_id": "x",
...                                                     "impression_id": "zz", "event_time": 1000})]
[('b', True)]
"""
from __future__ import annotations

import heapq
import time

from core.interactions import POSITIVE


class Labeller:
    def __init__(self, window_ms: int, lateness_ms: int, experiment: str | None = None,
                 partitions=(0,), idle_s: float = 5.0):
        self.window_ms, self.lateness_ms, self.experiment = window_ms, lateness_ms, experiment
        self._open: dict[str, dict] = {}  # impression id -> the impression, clicked so far
        self._closing: list[tuple[int, str]] = []  # (window end, impression id), a heap
        self.idle_s = idle_s
        now = time.monotonic()
        self._newest = {p: None for p in partitions}  # partition -> newest event time
        self._heard = {p: now for p in partitions}  # partition -> wall time of its last record
        self.newest_ms = None

    def add(self, record: dict, partition: int = 0) -> list[dict]:
        """Takes one interaction; returns the impressions whose windows it closed, labelled."""
        t = record["event_time"]
        if record["event_type"] == "impression":
            if record.get("experiment") and (self.experiment is None or record["experiment"] == self.experiment):
                self._open[record["event_id"]] = {**record, "clicked": False}
                heapq.heappush(self._closing, (t + self.window_ms, record["event_id"]))
        elif record["event_type"] in POSITIVE:
            shown = self._open.get(record.get("impression_id"))
            if shown is not None and shown["event_time"] <= t < shown["event_time"] + self.window_ms:
                shown["clicked"] = True
        newest = self._newest.get(partition)
        self._newest[partition] = t if newest is None else max(newest, t)
        self._heard[partition] = time.monotonic()
        self.newest_ms = t if self.newest_ms is None else max(self.newest_ms, t)
        return self.advance()

    def advance(self) -> list[dict]:
        """The impressions the watermark has passed the windows of (an idle partition lets go)."""
        now = time.monotonic()
        recent = [t for p, t in self._newest.items() if now - self._heard[p] < self.idle_s]
        if not recent:  # every partition idle: all there is has been read
            recent = [t for t in self._newest.values() if t is not None]
        if not recent or None in recent:
            return []  # a partition that has said nothing yet, and is not idle yet
        return self._close(min(recent) - self.lateness_ms)

    def _close(self, clock) -> list[dict]:
        done = []
        while self._closing and self._closing[0][0] <= clock:
            _, impression_id = heapq.heappop(self._closing)
            done.append(self._open.pop(impression_id))
        return done
