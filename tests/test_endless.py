"""An endless job lives: it outlives the job service's timeout and keeps learning on the real
broker (Beam's portable runner gave its job streams that timeout as a deadline, and the
local job died with them: see `pipelines.prism`)."""
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from core.kafka import produce
from tests.conftest import ROOT
from tests.test_kafka import _end_offsets, _events, _topic, _wait_for

pytestmark = pytest.mark.kafka
JOB_SERVER_TIMEOUT_S = 20


def test_an_endless_job_outlives_the_job_server_timeout(kafka_bootstrap, tmp_path):
    events = _events(300, seed=21)
    half = len(events) // 2
    topic, prefix = _topic(kafka_bootstrap), f"out-{uuid.uuid4().hex[:8]}"
    produce(events[:half], kafka_bootstrap, topic, "interaction", "user_id")
    delivered = lambda: sum(_end_offsets(kafka_bootstrap, f"{prefix}.predictions").values())  # noqa: E731
    log = open(tmp_path / "job.log", "w")
    started = time.monotonic()
    job = subprocess.Popen(
        [sys.executable, "-m", "pipelines.recommend", "--source", "kafka", "--bootstrap", kafka_bootstrap,
         "--topic", topic, "--group", "endless", "--kafka_out", prefix, "--streaming",
         "--attribution_minutes", "1", "--metrics_minutes", "1", "--output", str(tmp_path / "out"),
         f"--job_server_timeout={JOB_SERVER_TIMEOUT_S}"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_for(lambda: delivered() > 0 or job.poll() is not None, 180, "the first predictions")
        assert job.poll() is None, (tmp_path / "job.log").read_text()[-3000:]
        # Well past the deadline the streams had: still running ...
        time.sleep(max(0.0, started + 3 * JOB_SERVER_TIMEOUT_S - time.monotonic()))
        assert job.poll() is None, (tmp_path / "job.log").read_text()[-3000:]
        # ... and still learning: new events get their predictions.
        before = delivered()
        produce(events[half:], kafka_bootstrap, topic, "interaction", "user_id")
        _wait_for(lambda: delivered() > before or job.poll() is not None, 180, "predictions of the new events")
        assert job.poll() is None, (tmp_path / "job.log").read_text()[-3000:]
        assert time.monotonic() - started > 3 * JOB_SERVER_TIMEOUT_S
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
        job.wait()
