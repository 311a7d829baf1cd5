"""An experiment end to end on the live closed loop, from one command: `pipelines.live
--experiment` with a canary of a deliberately bad model (it predicts 0.9 for everything). The
learner learns both variants, the server routes half the users to the canary, the owner
labels what was served, aborts the canary on its log loss, and the server stops routing to it
within seconds; the report says so."""
import json
import signal
import subprocess
import sys
import time
import uuid

import requests

from stores.experiments import open_experiment_store
from stores.registry import open_registry
from tests.servers import free_port

SPEC = "docs/experiments/bad-canary.json"


def test_a_bad_canary_is_aborted_in_the_live_loop(kafka_bootstrap, tmp_path):
    port, name = free_port(), f"test-exp-{uuid.uuid4().hex[:8]}"
    live = subprocess.Popen(
        [sys.executable, "-m", "pipelines.live", "--output", str(tmp_path), "--port", str(port),
         "--bootstrap", kafka_bootstrap, "--topic", f"{name}.interactions", "--kafka_out", name,
         "--history", "600", "--users", "300", "--visits_per_s", "8", "--attribution_s", "10",
         "--allowed_lateness_s", "2", "--status_s", "5", "--experiment", SPEC],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines, url = [], f"http://127.0.0.1:{port}"
    try:
        for line in live.stdout:
            lines.append(line)
            if line.startswith("serving at"):
                break
        assert live.poll() is None and "experiment owner (pid" in "".join(lines), "".join(lines)
        store = open_experiment_store(str(tmp_path / "registry.sqlite"))
        deadline = time.monotonic() + 180
        while not [e for _, _, e in store.events("bad-canary") if e["event"] == "aborted"]:
            assert live.poll() is None and time.monotonic() < deadline, "".join(lines)
            time.sleep(1)
        (_, aborted_ms, event), = store.events("bad-canary")
        assert "log_loss" in event["reason"] and event["guardrails"]["log_loss"]["low"] > 0
        time.sleep(2)
        routed = {requests.get(f"{url}/recommendations/u{i:05d}", timeout=5).json()["variant"] for i in range(1, 60)}
        assert routed == {"champion"}
    finally:
        live.send_signal(signal.SIGINT)
        rest, _ = live.communicate(timeout=120)
        lines.append(rest)
    output = "".join(lines)
    assert live.returncode == 130 and "Traceback" not in output, output
    assert "live, canary:" in output and "live, champion:" in output  # the status line's CTR per variant
    truth = [json.loads(line) for line in open(tmp_path / "truth.jsonl")]
    canary = [t["served_at_ms"] for t in truth if t["variant"] == "canary"]
    assert canary and max(canary) - aborted_ms < 5_000  # no canary served seconds after the abort
    registry = open_registry(str(tmp_path / "registry.sqlite"))  # the learner learned and published both
    assert registry.latest("recommender").step > registry.latest("constant").step > 0
    report = (tmp_path / "experiment" / "report.md").read_text()
    assert "**Canary: aborted**" in report and "| canary | constant |" in report
