"""`python -m pipelines.live`: the whole loop (broker, streaming learner, server, simulated users)
from one command, learning what it serves, and Ctrl-C stopping every process it started.

The loop runs an experiment too (one loop for both: each costs a minute): a canary of a
deliberately bad model (it predicts 0.9 for everything) on half the users. The learner learns
both variants, the owner labels what was served, aborts the canary on its log loss, and the
server stops routing to it within seconds; the report says so."""
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid

import requests

from stores.experiments import open_experiment_store
from stores.registry import open_registry
from tests.servers import free_port

HISTORY = 400  # impressions
SPEC = "docs/experiments/bad-canary.json"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_the_live_loop_learns_what_it_serves_aborts_a_bad_canary_and_ctrl_c_stops_it_all(kafka_bootstrap, tmp_path):
    port, name = free_port(), f"test-live-{uuid.uuid4().hex[:8]}"
    live = subprocess.Popen(
        [sys.executable, "-m", "pipelines.live", "--output", str(tmp_path), "--port", str(port),
         "--bootstrap", kafka_bootstrap, "--topic", f"{name}.interactions", "--kafka_out", name,
         "--history", str(HISTORY), "--users", "100", "--visits_per_s", "4", "--attribution_s", "10",
         "--allowed_lateness_s", "2", "--status_s", "5", "--experiment", SPEC],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        for line in live.stdout:
            lines.append(line)
            if line.startswith("serving at"):
                break
        assert live.poll() is None, "".join(lines)
        pids = [int(p) for p in re.findall(r"pid (\d+)", next(x for x in lines if x.startswith("started:")))]
        url = f"http://127.0.0.1:{port}"
        serving_from_ms = time.time() * 1000

        def newest():
            models = requests.get(f"{url}/models", timeout=5).json()["models"]
            return next((m for m in models if m["model"] == "recommender"), None)

        # The streaming learner publishes from the history, then learns the served impressions:
        # its versions come to hold more labels than the history had impressions, learned past
        # the window of the first impression served.
        deadline = time.monotonic() + 240
        while True:
            model = newest()
            if model and model["step"] > HISTORY + 100 and model["clock_ms"] > serving_from_ms + 10_000:
                break
            assert live.poll() is None and time.monotonic() < deadline, (model, "".join(lines))
            time.sleep(2)
        truth = (tmp_path / "truth.jsonl").read_text().splitlines()
        assert len(truth) > 100  # the users saw what was served, and their truth went apart
        store = open_experiment_store(str(tmp_path / "registry.sqlite"))
        while not [e for _, _, e in store.events("bad-canary") if e["event"] == "aborted"]:
            assert live.poll() is None and time.monotonic() < deadline, "".join(lines)
            time.sleep(1)
        (_, aborted_ms, event), = store.events("bad-canary")
        assert "log_loss" in event["reason"] and event["guardrails"]["log_loss"]["low"] > 0
        time.sleep(2)
        answers = [requests.get(f"{url}/recommendations/u{i:05d}", params={"k": 3}, timeout=5).json()
                   for i in range(1, 60)]
        assert {a["variant"] for a in answers} == {"champion"}  # the canary is routed to no one
        assert all(a["source"] == "live" and len(a["items"]) == 3 for a in answers)
        assert answers[-1]["model_version"] >= model["version"]
    finally:
        live.send_signal(signal.SIGINT)  # Ctrl-C
        rest, _ = live.communicate(timeout=120)
        lines.append(rest)
    output = "".join(lines)
    assert live.returncode == 130, output
    assert re.search(r"\d\d:\d\d:\d\d  recommender v\d+ \([\d,]+ labels learned", output), output
    assert re.search(r"stopped: .*server \(pid", output) and "Traceback" not in output, output
    for pid in pids:  # the learner (and the runner it started) and the server are gone
        assert not _alive(pid), (pid, output)
    assert not [p for p in _session_members(pids)], output
    assert "live, canary:" in output and "live, champion:" in output  # the status line's CTR per variant
    truth = [json.loads(line) for line in open(tmp_path / "truth.jsonl")]
    canary = [t["served_at_ms"] for t in truth if t["variant"] == "canary"]
    assert canary and max(canary) - aborted_ms < 5_000  # no canary served seconds after the abort
    registry = open_registry(str(tmp_path / "registry.sqlite"))  # the learner learned and published both
    # (Not compared with each other: each model's last version is of its own moment before Ctrl-C.)
    assert registry.latest("recommender").step > HISTORY + 100 and registry.latest("constant").step > 0
    report = (tmp_path / "experiment" / "report.md").read_text()
    assert "**Canary: aborted**" in report and "| canary | constant |" in report


def _session_members(sessions):
    """Processes still in the sessions the children led (what they started)."""
    ps = subprocess.run(["ps", "-eo", "pid=,sid="], capture_output=True, text=True).stdout.split("\n")
    return [line for line in ps if line.split() and int(line.split()[1]) in sessions]
