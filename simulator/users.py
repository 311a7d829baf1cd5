"""Simulated users of the serving plane: the simulator's world (tastes, popularity, the slot's
bias) drives users who ask a server for recommendations, see the items shown, and click,
watch or skip by their true click probability, sending their outcomes back (POST /events).

Each user is sticky to one arm (a server: e.g. the live model, or the popularity fallback) by
a hash of their id. The truth of every impression shown (its true click probability and what
the user did) goes to a sink of its own, a JSON Lines file that the learning plane never
reads, so that later evaluations know the truth; the servers' event logs hold only what an
app would send.

>>> arm_of("u00042", ["live", "fallback"]) == arm_of("u00042", ["live", "fallback"])
True
"""
from __future__ import annotations

import json
import random
import time
import zlib

import requests

from simulator.stream import SimulatorConfig
from simulator.world import World


def arm_of(user_id: str, arms: list) -> str:
    """The arm a user always gets (sticky)."""
    return arms[zlib.crc32(user_id.encode()) % len(arms)]


class SimulatedUsers:
    """Users of `config`'s world asking the servers `arms` ({name: URL}) for `k` items."""

    def __init__(self, config: SimulatorConfig, arms: dict, truth_path: str, k: int = 5, seed: int = 0,
                 drift_at_ms: int | None = None):
        self.config, self.arms, self.k = config, dict(arms), k
        self.drift_at_ms = drift_at_ms  # tastes drift (the world's drifted tastes) from then on
        self.world = World(config, random.Random(f"{config.seed}:world"))  # the world the history came from
        self.rng = random.Random(f"{seed}:users")
        self.item_index = {item: i for i, item in enumerate(self.world.item_ids)}
        self._truth = open(truth_path, "a")
        self._session = requests.Session()

    def visit(self) -> list[dict]:
        """One user asks for recommendations and reacts to each item shown; returns the truths."""
        user = self.world.pick_user(self.rng)
        user_id, device = self.world.user_ids[user], self.world.devices[user]
        arm = arm_of(user_id, sorted(self.arms))
        asked = time.perf_counter()
        answer = self._session.get(f"{self.arms[arm]}/recommendations/{user_id}",
                                   params={"k": self.k, "device": device}, timeout=10)
        latency_ms = (time.perf_counter() - asked) * 1000
        answer.raise_for_status()
        shown = answer.json()
        drifted = self.drift_at_ms is not None and shown["served_at_ms"] >= self.drift_at_ms
        truths = []
        oracle = self.world.oracle(user, shown["served_at_ms"], drifted, self.k)
        for item in shown["items"]:
            index = self.item_index.get(item["item_id"])
            if index is None:  # not an item of this world: no truth to tell
                continue
            p = self.world.click_probability(user, index, item["position"], shown["served_at_ms"], drifted)
            outcome = "click" if self.rng.random() < p else "skip" if self.rng.random() < 0.15 else None
            if outcome is not None:
                self._send(arm, outcome, item, shown, user_id, device)
            truths.append({"impression_id": item["impression_id"], "arm": arm, "source": shown["source"],
                           "variant": shown.get("variant"),
                           "model_version": shown["model_version"], "user_id": user_id, "item_id": item["item_id"],
                           "position": item["position"], "propensity": item["propensity"],
                           "probability": item["probability"], "served_at_ms": shown["served_at_ms"],
                           "features_ms": shown["features_ms"], "latency_ms": latency_ms, "drifted": drifted,
                           "true_click_probability": p, "outcome": outcome,
                           "oracle_click_probability": oracle[item["position"]] if item["position"] < len(oracle)
                           else None})
        for truth in truths:
            self._truth.write(json.dumps(truth) + "\n")
        return truths

    def run(self, visits: int, rate: float | None = None) -> dict:
        """`visits` visits (at `rate` per second, or as fast as answered); per arm: impressions,
        clicks, and the expected CTR (mean true click probability of what was shown)."""
        summary, start = {}, time.monotonic()
        for n in range(visits):
            if rate:
                time.sleep(max(0.0, start + n / rate - time.monotonic()))
            for truth in self.visit():
                arm = summary.setdefault(truth["arm"], {"impressions": 0, "clicks": 0, "expected_clicks": 0.0})
                arm["impressions"] += 1
                arm["clicks"] += truth["outcome"] == "click"
                arm["expected_clicks"] += truth["true_click_probability"]
        self._truth.flush()
        for arm in summary.values():
            arm["ctr"] = arm["clicks"] / arm["impressions"]
            arm["expected_ctr"] = arm.pop("expected_clicks") / arm["impressions"]
        return summary

    def close(self):
        self._truth.close()
        self._session.close()

    def _send(self, arm, outcome, item, shown, user_id, device):
        event = {"event_type": outcome, "impression_id": item["impression_id"], "user_id": user_id,
                 "item_id": item["item_id"], "item_genres": item["genres"], "device": device,
                 "event_time": shown["served_at_ms"] + 1_000}
        self._session.post(f"{self.arms[arm]}/events", json=event, timeout=10).raise_for_status()
