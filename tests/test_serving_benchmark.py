"""The serving benchmark's command, short: a real server, vegeta's open-loop load at low rates
for 2 s (/predict and batch lookups), and Kafka request -> reply; every row has its figures and its floor. The full run's
figures are in the README."""
import json

import pytest

from benchmarks import serving

pytestmark = pytest.mark.kafka


def test_the_short_benchmark_reports_each_row_beside_its_floor(kafka_bootstrap, tmp_path, capsys):
    out = tmp_path / "serving.json"
    assert serving.main(["--impressions", "3000", "--predict_rates", "100", "--recommend_rates", "",
                         "--batch_rates", "100", "--kafka_rates", "20", "--bootstrap", kafka_bootstrap,
                         "--duration", "2", "--port", "18131", "--json", str(out)]) == 0
    results = json.loads(out.read_text())
    assert 0 < results["cold_start_s"] < 60 and results["learner"] == "not running"
    for endpoint, rate in (("predict", 100), ("batch", 100), ("kafka", 20)):
        row, = results[endpoint]["rows"]
        assert row["rate"] == rate and row["errors"] == 0 and row["requests"] >= rate * 2, row
        assert 0 < row["p50_ms"] <= row["p99_ms"] <= row["max_ms"], row
        if endpoint != "kafka":  # vegeta's rate; and the floor: the same load on a do-nothing app, right before
            assert abs(row["achieved"] - rate) < rate * 0.1 and 0 < row["floor_p99_ms"], row
            assert row.get("status_codes") == {"200": row["requests"]}, row
            # CPU in clock ticks (10 ms): the server's 200 requests take several, the floor's maybe none
            assert 0 <= row["floor_cpu_us_per_request"] < row["cpu_us_per_request"] < 1e6 / rate, row
    table = capsys.readouterr().out
    assert "recommend" not in results and "| batch | 100 |" in table and "floor p99 ms" in table and "CPU us/request" in table
