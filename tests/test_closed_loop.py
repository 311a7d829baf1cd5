"""The closed loop: simulated users (the simulator's world) ask real servers for
recommendations and answer with outcomes; what was served is logged, the learning plane learns
exactly that, and the truth goes to a sink of its own."""
import json

import fastavro
import requests

from pipelines import recommend
from simulator.stream import SimulatorConfig
from simulator.users import SimulatedUsers
from tests.servers import serving

SEED = 3


def test_users_in_the_loop_their_truth_apart_and_the_learner_learns_what_was_served(tmp_path):
    history = tmp_path / "history"
    recommend.run(["--impressions", "6000", "--seed", str(SEED), "--output", str(history)])
    logs = {"live": tmp_path / "live.avro", "fallback": tmp_path / "fallback.avro"}
    truth_path = tmp_path / "truth.jsonl"
    # Two arms on the same stores and candidates: the live model, and a server with no model
    # of its key (it ranks by popularity, its fallback).
    with serving(history, "--event_log", str(logs["live"]), "--cache_s", "0", "--seed", "1") as live, \
            serving(history, "--event_log", str(logs["fallback"]), "--model", "no-such-model", "--seed", "1",
                    healthy=False) as fallback:
        users = SimulatedUsers(SimulatorConfig(seed=SEED), {"live": live, "fallback": fallback}, str(truth_path),
                               k=5, seed=2)
        summary = users.run(600)
        users.close()
        assert requests.get(f"{fallback}/healthz", timeout=5).status_code == 503  # no model: the fallback served
    truths = [json.loads(line) for line in open(truth_path)]
    assert {t["source"] for t in truths if t["arm"] == "live"} == {"live"}
    assert {t["source"] for t in truths if t["arm"] == "fallback"} == {"fallback"}
    for arm, log in logs.items():
        records = list(fastavro.reader(open(log, "rb")))
        impressions = {r["event_id"]: r for r in records if r["event_type"] == "impression"}
        outcomes = [r for r in records if r["event_type"] != "impression"]
        arm_truths = [t for t in truths if t["arm"] == arm]
        # Every impression shown is logged once, with what was shown; every outcome sent too.
        assert set(impressions) == {t["impression_id"] for t in arm_truths}
        for t in arm_truths:
            shown = impressions[t["impression_id"]]
            assert (shown["user_id"], shown["item_id"], shown["position"]) == (t["user_id"], t["item_id"], t["position"])
            assert shown["propensity"] == t["propensity"]
        assert sorted(o["impression_id"] for o in outcomes) == sorted(t["impression_id"] for t in arm_truths
                                                                      if t["outcome"])
        # The truth is in its own sink, never in what the learning plane reads.
        assert not any("true_click_probability" in json.dumps(r, default=str) for r in records)
        # The learning plane reads the log and learns each served impression, labelled by its outcome.
        learned = recommend.run(["--events", str(log), "--output", str(tmp_path / f"learned-{arm}")])
        assert learned["models"]["recommender"]["count"] == len(impressions)
        assert learned["counts"]["outcomes_joined"] == len(outcomes)
    assert summary["live"]["impressions"] + summary["fallback"]["impressions"] == len(truths)
    # Comparable users (a hash splits them), the same candidates: the live model's picks are
    # worth more clicks than popularity's, by the world's true click probabilities (one run:
    # 0.113 against 0.060).
    assert summary["live"]["expected_ctr"] > 1.3 * summary["fallback"]["expected_ctr"], summary
