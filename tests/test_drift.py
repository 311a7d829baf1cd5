"""Drift detection on streams whose changes are known: the tuned detectors stay quiet on a
stationary stream, find a label-rate shift and a feature shift, and ignore a model that gets
better; the benchmark's short run against river's defaults."""
import numpy as np

from benchmarks import drift as bench
from monitoring.drift import Monitor


def _stream(n, seed, factor=1.0, change_at=None, activity_shift=0.0):
    return bench.stream(seed, n, change_at, factor, activity_shift)


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
    assert alarm.signal in ("log_loss", "residual") and 20_000 < alarm.at < 30_000


def test_a_feature_shift_is_found_on_that_feature_only():
    monitor = Monitor(features=["activity"])
    for y, p, x in _stream(60_000, seed=7, change_at=30_000, activity_shift=1.0):
        monitor.update(y, p, x)
    assert {a.signal for a in monitor.alarms} == {"feature:activity"}
    assert all(a.at > 30_000 for a in monitor.alarms)


def test_a_model_that_gets_better_raises_no_quality_alarm():
    """Labels become easier to predict (a CTR that falls while the model predicts it): log loss
    falls, and the one-sided log-loss test says nothing."""
    monitor = Monitor({"log_loss": Monitor().specs["log_loss"]})
    rng = np.random.default_rng(8)
    for i in range(100_000):
        p = 0.05 if i < 30_000 else 0.01
        monitor.update(bool(rng.random() < p), p)
    assert monitor.alarms == []


def test_the_benchmarks_short_run_scores_the_tuned_detectors_beside_rivers_defaults(capsys):
    class Args:
        quick, tune, taste_impressions = True, False, 0
    results = bench.run(Args())
    tuned, defaults = results["tuned"], results["river_defaults"]
    assert tuned["stationary"]["events"] == 300_000 and tuned["stationary"]["per_million"] == 0
    assert defaults["stationary"]["per_million"] > 10  # river's defaults alarm every few thousand events
    assert tuned["ctr_shift"]["runs"] == 20 and tuned["ctr_shift"]["missed"] <= 2
    assert 0 < tuned["ctr_shift"]["median_delay"] < bench.AFTER
