"""The trade-off report from one command, on a short closed loop with the real broker, learner,
two servers and the batch job (the learning half from a committed benchmarks.warm_start run)."""
import json
import pathlib

from benchmarks import tradeoffs

LEARNING = pathlib.Path(__file__).resolve().parent.parent / "docs" / "bench" / "warm_start-2026-12-03.json"


def test_one_command_reports_batch_against_real_time_serving(kafka_bootstrap, tmp_path):
    out = tmp_path / "report"
    assert tradeoffs.main(["--output", str(out), "--loop_dir", str(tmp_path / "loop"), "--users", "200",
                           "--duration_s", "45", "--batch_every_s", "15", "--drift_after_s", "22",
                           "--visits_per_s", "3", "--port", "8190", "--history", "1000",
                           "--learning_json", str(LEARNING)]) == 0
    results = json.loads((out / "tradeoffs.json").read_text())
    live, batch = (results["serving"]["arms"][arm]["run"] for arm in ("live", "batch"))
    assert live["impressions"] > 100 and batch["impressions"] > 100
    assert live["from_batch"] == 0 and batch["from_batch"] > 0.3  # the batch arm answered from its lists
    assert live["feature_age_s"]["p50"] < 1 < batch["feature_age_s"]["p99"]  # stale by design
    assert 0 < batch["expected_ctr"] < 1 and 0 < live["served_roc_auc"] < 1
    assert 0 < live["of_oracle"] <= 1 and 0 < batch["of_oracle"] <= 1  # nobody beats the truth
    truth = [json.loads(line) for line in open(tmp_path / "loop" / "truth.jsonl")]
    assert any(r["drifted"] for r in truth) and not all(r["drifted"] for r in truth)
    report = (out / "report.md").read_text()
    assert "| batch, after drift |" in report and "warm - cold ROC AUC" in report
    assert (out / "tradeoffs.png").stat().st_size > 10_000
