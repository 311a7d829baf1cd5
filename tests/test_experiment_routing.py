"""Who sees which variant: sticky buckets, a canary's ramp and abort, Thompson sampling's
probabilities."""
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from experiments import canary, ratio
from experiments.assignment import BUCKETS, Split, bucket
from experiments.bandit import ThompsonRouter

USERS = [f"user-{i}" for i in range(20_000)]


def test_buckets_are_the_same_in_another_process_and_uniform():
    """Two processes with different hash seeds (two serving replicas) put every user in the same
    bucket; buckets are uniform (chi-square) and another salt reshuffles them."""
    here = [bucket(u, "exp-1") for u in USERS]
    code = ("import json, sys; from experiments.assignment import bucket; "
            "print(json.dumps([bucket(f'user-{i}', 'exp-1') for i in range(20000)]))")
    there = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": "12345"}).stdout
    assert here == [int(b) for b in there.strip("[]\n").split(", ")]
    counts = np.bincount(np.array(here) // 100, minlength=BUCKETS // 100)
    assert stats.chisquare(counts).pvalue > 0.001
    other = [bucket(u, "exp-2") for u in USERS]
    assert abs(np.corrcoef(here, other)[0, 1]) < 0.05


def test_raising_a_canarys_weight_only_moves_users_from_control_to_the_canary():
    ramp = [0.01, 0.05, 0.25, 0.5, 1.0]
    splits = [Split({"control": 1 - w, "canary": w}, control="control") for w in ramp]
    for before, after, (w0, w1) in zip(splits, splits[1:], zip(ramp, ramp[1:])):
        assert before.moves(after) == {("control", "canary"): round((w1 - w0) * BUCKETS)}
    canaried = set()
    for split in splits:  # users who once saw the canary see it at every later stage
        now = {u for u in USERS if split.variant(bucket(u, "exp-1")) == "canary"}
        assert canaried <= now
        canaried = now
    shares = [np.mean([s.variant(bucket(u, "exp-1")) == "canary" for u in USERS]) for s in splits[:3]]
    assert shares == pytest.approx([0.01, 0.05, 0.25], abs=0.006)


def test_a_split_refuses_weights_that_do_not_add_up():
    with pytest.raises(ValueError, match="sum to 1"):
        Split({"control": 0.5, "b": 0.4}, control="control")
    with pytest.raises(ValueError, match="control variant"):
        Split({"a": 0.5, "b": 0.5}, control="control")


def _moments(loss_per_impression: float, users: int, rng) -> ratio.Moments:
    x = rng.integers(1, 10, users)
    return ratio.Moments.of(x, rng.gamma(4, loss_per_impression / 4, users) * x)


def _ramp_with(loss_factor: float, latency_ms: float = 5.0, error_rate: float = 0.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    ramp = canary.Ramp((canary.Stage(0.1, 2_000, 0.5), canary.Stage(0.5, 2_000, 0.1)), max_extensions=1)
    run = canary.Canary(ramp, [canary.RatioGuardrail("log_loss", tau2=0.01)],
                        latency=canary.LatencyGuardrail(p99_ms=20.0, window=500), errors=canary.ErrorGuardrail(0.02))
    baseline, treated = ratio.Moments.of([], []), ratio.Moments.of([], [])
    requests = ratio.Moments.of([], [])
    weights = []
    for users in range(500, 20_001, 500):
        share = int(500 * run.weight)
        baseline += _moments(0.2, share, rng)
        treated += _moments(0.2 * loss_factor, share, rng)
        sent = rng.integers(1, 10, share)
        requests += ratio.Moments.of(sent, rng.binomial(sent, error_rate))
        run.check(users, {"log_loss": (baseline, treated)}, rng.normal(latency_ms, 1, 1000), requests)
        weights.append(run.weight)
        if run.state != canary.RAMPING:
            break
    return run, weights


def test_a_good_canary_advances_stage_by_stage_and_is_promoted():
    run, weights = _ramp_with(1.0)
    assert run.state == canary.PROMOTED and weights[-1] == 1.0
    assert [e["event"] for e in run.events] == ["advanced", "promoted"]
    assert sorted(set(weights)) == [0.1, 0.5, 1.0] and weights == sorted(weights)
    assert all(e["guardrails"]["log_loss"]["high"] < 0.5 for e in run.events)


def test_a_worse_canary_is_aborted_and_routed_to_no_one():
    run, weights = _ramp_with(1.5)
    assert run.state == canary.ABORTED and weights[-1] == 0.0 and run.weight == 0.0
    event = run.events[-1]
    assert event["event"] == "aborted" and "log_loss" in event["reason"]
    assert event["guardrails"]["log_loss"]["low"] > 0  # worse with confidence


def test_a_slow_canary_is_aborted_on_its_p99_latency():
    run, _ = _ramp_with(1.0, latency_ms=40.0)
    assert run.state == canary.ABORTED and "p99 latency" in run.events[-1]["reason"]
    assert run.events[-1]["users"] == 500  # at the first check


def test_a_failing_canary_is_aborted_on_its_error_rate_and_a_rare_error_is_no_breach():
    run, _ = _ramp_with(1.0, error_rate=0.10)
    assert run.state == canary.ABORTED and run.events[-1]["users"] == 500
    assert "error rate" in run.events[-1]["reason"] and "> 2.0%" in run.events[-1]["reason"]
    run, _ = _ramp_with(1.0, error_rate=0.01)  # under the 2% bound
    assert run.state == canary.PROMOTED


def test_an_inconclusive_canary_is_never_promoted():
    """A canary 8% worse: too close to tell at the last stage's 10% margin within the stage and
    its extension, so the ramp aborts instead of promoting."""
    run, _ = _ramp_with(1.08, seed=2)
    assert run.state == canary.ABORTED
    assert run.events[-1]["reason"] in ("inconclusive after every extension", "guardrail breached: log_loss")


def test_thompson_probabilities_are_those_of_rivers_posterior_draws():
    """The quadrature's choice probabilities against the frequencies of 20,000 `choose` calls
    (river's Beta draws), with the floor mixed in."""
    router = ThompsonRouter(["a", "b", "c"], floor=0.02, seed=3)
    for arm, clicks, n in (("a", 10, 200), ("b", 14, 200), ("c", 13, 180)):
        router.update_many(arm, clicks, n)
    expected = router.probabilities()
    draws = [router.choose() for _ in range(20_000)]
    for arm in "abc":
        share = np.mean([a == arm for a, _ in draws])
        assert share == pytest.approx(expected[arm], abs=0.012)
        assert all(p == expected[arm] for a, p in draws if a == arm)
    assert min(expected.values()) >= 0.02 and sum(expected.values()) == pytest.approx(1)


def test_update_many_is_as_many_updates():
    one, many = ThompsonRouter(["a", "b"], seed=1), ThompsonRouter(["a", "b"], seed=1)
    for reward in [1, 0, 0, 1, 0]:
        one.update("a", reward)
    many.update_many("a", clicks=2, impressions=5)
    assert one.probabilities() == many.probabilities()
