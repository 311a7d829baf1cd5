"""What a person sees: the jobs' console output, progress bars, and one-line errors."""
import io
import pathlib
import subprocess
import sys
import time

import pytest

from pipelines.console import Bar, Console
from transforms.progress import add_progress

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCREEN = 24  # lines of a terminal


def _job(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("console") / "recommend"
    return out, _job("pipelines.recommend", "--impressions", "2000", "--users", "50", "--output", str(out))


def test_the_main_job_fits_on_one_screen(small_run):
    out, done = small_run
    assert done.returncode == 0, done.stderr[-3000:]
    lines = (done.stdout + done.stderr).splitlines()
    assert 0 < len(lines) <= SCREEN, lines
    noise = [line for line in lines if line.startswith(("INFO", "WARNING", "DEBUG", "Traceback"))
             or "Converting string literal" in line or "apitools" in line]
    assert not noise, noise
    text = "\n".join(lines)
    # The summary: record accounting that balances, every model's metrics, where the outputs are.
    assert "records: " in text and " read = " in text, text
    assert all(f"\n{model}" in text for model in ("recommender (main)", "no_features", "popularity")), text
    assert f"outputs in {out}/:" in text and "report.md" in text


def test_verbose_shows_beams_logs(tmp_path):
    done = _job("pipelines.recommend", "--impressions", "300", "--users", "20", "--no_baselines",
                "--output", str(tmp_path), "--verbose")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "apache_beam" in done.stderr


@pytest.mark.parametrize("args, says", [
    (["pipelines.recommend", "--events", "/no/such/file.avro"], "no such file: --events /no/such/file.avro"),
    (["pipelines.recommend", "--model", "models.zoo:no_such_model"], "has no function 'no_such_model'"),
    (["pipelines.recommend", "--model", "models.zoo:linear_regression"], "must build a binary classifier"),
    (["pipelines.recommend", "--paralellism=2"], "unknown flags: --paralellism=2"),
    (["pipelines.prequential", "--input", "/no/such.csv", "--target", "y", "--output", "/tmp/x"], "no such file"),
    (["pipelines.backfill", "--events", "/no/such.avro", "--cutoff", "0"], "no such file"),
])
def test_a_bad_flag_is_one_line_and_exit_2(args, says):
    done = _job(*args, timeout=120)
    assert done.returncode == 2
    assert done.stdout == "" and len(done.stderr.splitlines()) == 1 and says in done.stderr, done.stderr


def test_a_broker_that_is_down_is_one_line_and_exit_1(tmp_path):
    done = _job("pipelines.recommend", "--source", "kafka", "--bootstrap", "127.0.0.1:9", "--stop_at_end",
                "--output", str(tmp_path), timeout=120)
    assert done.returncode == 1
    assert done.stderr.splitlines() == ["error: no Kafka broker answered at 127.0.0.1:9 within 10 s: "
                                        "is it running? (bash scripts/kafka.sh start)"], done.stderr


def test_a_run_that_read_nothing_fails(tmp_path):
    rows = tmp_path / "rows.csv"
    rows.write_text("x,y\n1.0,\n2.0,\n")  # no row has a target
    done = _job("pipelines.prequential", "--input", str(rows), "--target", "y", "--output", str(tmp_path / "out"),
                timeout=300)
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1].startswith("error: no predictions from"), done.stderr


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bars_follow_their_counters():
    screen = _Terminal()
    with Console(enabled=True, stream=screen).progress([Bar("test:a", 100, "records", "features"),
                                                        Bar("test:b", None, "events", "learning")]):
        add_progress("test:a", 60)
        add_progress("test:b", 7)
        time.sleep(0.6)  # the bars are redrawn every 0.25 s
        add_progress("test:a", 40)
        time.sleep(0.6)
    drawn = screen.getvalue()
    assert "features" in drawn and "60.0/100" in drawn and "100/100" in drawn, drawn
    assert "learning" in drawn and "7.00 events" in drawn, drawn


def test_a_quiet_console_draws_nothing():
    screen = _Terminal()
    with Console(enabled=False, stream=screen).progress([Bar("test:c", 10, "records", "x")]):
        add_progress("test:c", 10)
        time.sleep(0.3)
    assert screen.getvalue() == ""
