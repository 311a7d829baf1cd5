"""The Prism that scripts/prism.sh builds waits for a bundle without spinning.

Upstream Prism 2.77 waits for each bundle in a loop whose `select` keeps a case for the
bundle's data channel; once all data is sent that channel is closed, always ready, and the
loop spins a core until the SDK worker answers (scripts/prism.sh patches it). Here a bundle
sleeps in its DoFn for a few seconds: Prism's CPU time over that stretch must stay far below
the stretch itself (spinning, it was about one CPU-second per second).
"""
import os
import pathlib
import threading
import time

import apache_beam as beam

from pipelines.options import pipeline_options

SLEEP_S = 4.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _prism_pids() -> list[int]:
    """The Prism processes this test process started."""
    pids = []
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")[0]
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
        if cmdline.endswith(b"/prism") and parent == os.getpid():
            pids.append(int(entry.name))
    return pids


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of `pid`."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


RUNNING = threading.Event()  # module-level: the DoFn, pickled by reference, sets this very one


class _Sleep(beam.DoFn):
    def process(self, element):
        RUNNING.set()
        time.sleep(SLEEP_S)
        yield element


def test_prism_does_not_spin_while_a_bundle_runs():
    samples = {}

    def sample():  # from 1 s into the sleep, for half of it: the bundle's data is all sent
        if not RUNNING.wait(timeout=120):
            return
        time.sleep(1.0)
        pids = _prism_pids()
        before = {p: _cpu_s(p) for p in pids}
        time.sleep(SLEEP_S / 2)
        samples["cpu_s"] = sum(_cpu_s(p) - before[p] for p in pids)
        samples["pids"] = pids

    RUNNING.clear()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    with beam.Pipeline(options=pipeline_options(["--streaming"])) as p:
        _ = p | beam.Create([1]) | beam.ParDo(_Sleep())
    sampler.join(timeout=60)
    assert samples.get("pids"), "no Prism process of this test was found while the bundle ran"
    # Spinning: about SLEEP_S / 2 CPU-seconds; idle: a few hundredths.
    assert samples["cpu_s"] < SLEEP_S / 8, samples
