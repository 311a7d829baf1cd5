"""The benchmark's command, short (`--quick`: a tenth of the experiments): every figure the
issue names is in its JSON and in its table; the full run's figures are in the README."""
import json

from benchmarks import experiments

KEYS = ["aa_false_positive_rate", "ab_power", "ab_median_sample_ratio", "cs_coverage", "canary_bad_caught_rate",
        "canary_good_abort_rate", "canary_good_promoted_rate", "bandit_best_arm_share", "ope_relative_error"]


def test_the_quick_benchmark_reports_every_figure(tmp_path, capsys):
    out = tmp_path / "experiments.json"
    assert experiments.main(["--quick", "--seed", "1", "--output", str(out)]) == 0
    results = json.loads(out.read_text())
    assert all(0 <= results[k] <= 1 for k in KEYS if k != "ab_median_sample_ratio")
    assert results["runs"]["aa_runs"] == 50 and results["plan"]["max_users"] >= 20_000
    # Even a tenth of the runs separates what must be separated.
    assert results["ab_power"] > 0.5 > results["aa_false_positive_rate"]
    assert results["canary_bad_caught_rate"] > 0.8 and results["canary_good_promoted_rate"] > 0.6
    assert results["bandit_best_arm_share"] > 0.8
    assert 0 < results["ab_median_sample_ratio"] <= 2
    table = capsys.readouterr().out
    assert all(f"`{k}`" in table for k in KEYS)
