"""Drift detection on streams whose changes are known: the Bernoulli CUSUM's false alarms and
delays are what the theory says; the tuned monitor stays quiet on a stationary stream, finds a
label-rate shift and a feature shift, and ignores a model that gets better; the benchmark's
short run against river's defaults and the oracle."""
import doctest
import statistics

import numpy as np
import pytest

from benchmarks import drift as bench
from monitoring import drift
from monitoring.drift import TUNED, BernoulliCUSUM, Monitor, Spec


def _stream(n, seed, factor=1.0, change_at=None, activity_shift=0.0):
    return bench.stream(seed, n, change_at, factor, activity_shift)


def _first_alarm(detector, seed, factor, change_at=20_000, n=80_000):
    """The events after `change_at` to the detector's first alarm (None: none), and its alarms before."""
    early = 0
    for i, (y, p, _) in enumerate(_stream(n, seed, factor, change_at)):
        detector.update((y, p))
        if detector.drift_detected:
            if i >= change_at:
                return i - change_at + 1, early
            early += 1
    return None, early


def test_the_docstring_examples_hold():
    assert doctest.testmod(drift).failed == 0


def test_the_cusums_false_alarms_come_as_often_as_siegmund_says():
    """At threshold 5, each side alarms about every (e^5 - 6) / I events (I: the information
    per event against its change): about 13 per million both ways, 7 of them up."""
    theory = bench.theory(n=200_000)
    expected = {side: 1e6 * theory["information_before"][side] / (np.exp(5.0) - 6) for side in ("up", "down")}
    counts = bench.cusum_alarms([Spec("BernoulliCUSUM", {"threshold": 5.0}),
                                 Spec("BernoulliCUSUM", {"threshold": 5.0, "mode": "up"})], [11], 1_000_000)
    both, up = sum(expected.values()), expected["up"]
    assert 0.5 * both < counts[0] < 1.6 * both and 0.3 * up < counts[1] < 1.8 * up, (counts, expected)


def test_the_tuned_cusum_finds_a_5_to_6_percent_shift_about_when_the_theory_says():
    """The mean delay of a CUSUM at threshold h is about (h - 1 + e^-h) / I' (I': the
    information per event of the change); at most one alarm in the 600,000 events before the
    changes of 30 runs."""
    spec = TUNED["calibration"]
    h, after = spec.params["threshold"], bench.theory(n=200_000)["information_after"]
    runs = [_first_alarm(spec.make(), seed, 1.2) for seed in range(500, 530)]
    delays = [d for d, _ in runs]
    assert sum(early for _, early in runs) <= 1 and None not in delays
    assert 0.6 < statistics.mean(delays) / ((h - 1 + np.exp(-h)) / after) < 1.4, delays


def test_a_fall_is_found_by_the_down_side_only():
    delay, early = _first_alarm(BernoulliCUSUM(threshold=8.0), seed=12, factor=0.7)
    assert early == 0 and 0 < delay < 20_000
    assert _first_alarm(BernoulliCUSUM(threshold=8.0, mode="up"), seed=12, factor=0.7)[0] is None


def test_the_cusum_is_a_river_detector_that_starts_afresh_after_an_alarm():
    """Each click predicted at 5% adds log 1.5 = 0.405 up: the 8th passes 3."""
    cusum = BernoulliCUSUM(ratio=1.5, threshold=3.0)
    fired = []
    for _ in range(8):
        cusum.update((True, 0.05))
        fired.append(cusum.drift_detected)
    assert fired == [False] * 7 + [True] and cusum.statistic[0] > 3.0
    cusum.update((False, 0.05))
    assert not cusum.drift_detected and cusum.statistic[0] == 0.0 and 0 < cusum.statistic[1] < 0.02  # afresh, one step
    assert cusum.clone().threshold == 3.0 and str(TUNED["calibration"]).startswith("BernoulliCUSUM(ratio=1.2")
    for bad in ({"ratio": 1.0}, {"threshold": 0}, {"mode": "sideways"}):
        with pytest.raises(ValueError):
            BernoulliCUSUM(**bad)


def test_the_tuned_monitor_is_all_but_quiet_on_200_000_stationary_events_where_rivers_defaults_are_not():
    tuned, defaults = Monitor(features=["activity"]), Monitor(bench.DEFAULTS)
    for y, p, x in _stream(200_000, seed=5):
        tuned.update(y, p, x)
        defaults.update(y, p, x)
    assert tuned.seen == 200_000 and len(tuned.alarms) <= 1 and len(defaults.alarms) > 10


def test_a_ctr_shift_is_found_after_it():
    monitor = Monitor()
    for i, (y, p, x) in enumerate(_stream(80_000, seed=6, factor=1.5, change_at=20_000)):
        if monitor.update(y, p, x):
            break
    alarm, = monitor.alarms
    assert alarm.signal == "calibration" and alarm.detector == str(TUNED["calibration"]) and 20_000 < alarm.at < 30_000


def test_a_feature_shift_is_found_on_that_feature_only():
    monitor = Monitor(features=["activity"])
    for y, p, x in _stream(60_000, seed=7, change_at=30_000, activity_shift=0.3):
        monitor.update(y, p, x)
    assert {a.signal for a in monitor.alarms} == {"feature:activity"}
    assert all(a.at > 30_000 for a in monitor.alarms)


def test_a_model_that_gets_better_raises_no_quality_alarm():
    """Labels become easier to predict (a CTR that falls while the model predicts it): the
    calibration holds, log loss falls, and the one-sided log-loss test says nothing."""
    monitor = Monitor({**TUNED, "log_loss": bench.PAGEHINKLEY["log_loss"]})
    rng = np.random.default_rng(8)
    for i in range(100_000):
        p = 0.05 if i < 30_000 else 0.01
        monitor.update(bool(rng.random() < p), p)
    assert monitor.alarms == []


def test_the_benchmarks_short_run_scores_the_tuned_detectors_beside_rivers_defaults_and_the_oracle(capsys):
    class Args:
        quick, tune, taste_impressions = True, False, 0
    results = bench.run(Args())
    tuned, defaults, oracle = results["tuned"], results["river_defaults"], results["oracle"]
    assert tuned["stationary"]["events"] == 300_000 and sum(tuned["stationary"]["alarms"].values()) <= 1
    assert defaults["stationary"]["per_million"] > 10  # river's defaults alarm every few thousand events
    assert tuned["ctr_shift"]["runs"] == 20 and tuned["ctr_shift"]["missed"] == 0
    assert 0 < oracle["ctr_shift"]["median_delay"] < tuned["ctr_shift"]["median_delay"] < bench.AFTER
    assert tuned["ctr_shift"]["median_delay"] < results["pagehinkley"]["ctr_shift"]["median_delay"]
    assert tuned["feature_shift"]["missed"] == 0 and tuned["feature_shift"]["alarms_before_change"] == 0
    assert 0.0009 < results["theory"]["information_after"] < 0.0011  # about a thousandth of a nat per event
