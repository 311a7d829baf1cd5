"""What a job shows a person: what it is doing in a few lines, a progress bar with rate and ETA
while it runs, and a one-screen summary at the end. Errors a user can cause print one line and
exit non-zero, without a stack trace.

Jobs call `run(argv)` as a library (tests, other code) and get their results back, silently;
`main(run)` is the command line around it: it parses `--verbose`, shows the progress and the
summary that `run` hands it, and turns user errors into an exit code.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import threading
import time
from typing import NamedTuple

from core.avro import UnreadableAvroFile
from models.serde import WeakKey
from pipelines import logs
from pipelines.options import unknown_flags
from transforms.progress import progress_count


class UserError(Exception):
    """A mistake a user can make and fix (a missing file, a broker that is down): one line."""


class Console:
    """Lines, a progress bar and a summary, on stderr; silent unless `enabled`."""

    def __init__(self, enabled: bool = False, stream=None):
        self.enabled, self.stream = enabled, stream or sys.stderr
        self.stop_note = "stopped (Ctrl-C)"  # what Ctrl-C stopped (a job may run on elsewhere)

    def say(self, line: str) -> None:
        if self.enabled:
            print(line, file=self.stream, flush=True)

    @contextlib.contextmanager
    def progress(self, bars):
        """Progress bars, one per `Bar`, fed by the `transforms.progress` counters of this
        process while the body runs (on a terminal only: tqdm stays silent in a log or pipe)."""
        if not self.enabled:
            yield
            return
        from tqdm import tqdm

        shown = [tqdm(total=bar.total, unit=f" {bar.unit}", unit_scale=True, desc=f"{bar.what:<9}",
                      file=self.stream, position=i, leave=False, dynamic_ncols=True, disable=None)
                 for i, bar in enumerate(bars)]
        done = threading.Event()

        def follow():
            seen = [0] * len(bars)
            while not done.wait(0.25):
                for i, bar in enumerate(bars):
                    now = progress_count(bar.counter)
                    shown[i].update(now - seen[i])
                    seen[i] = now

        thread = threading.Thread(target=follow, name="progress", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()
            for bar in reversed(shown):
                bar.close()


class Bar(NamedTuple):
    """A progress bar: the counter it shows, its total (None: unknown, no ETA), unit, label."""

    counter: str
    total: int | None
    unit: str
    what: str


QUIET = Console(enabled=False)


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, whose errors are one line (and a pointer to --help), not a usage block."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (--help for usage)\n")

    def parse_job_args(self, argv=None):
        """(this job's flags, Beam's flags); a flag that is neither is an error."""
        args, beam_args = self.parse_known_args(argv)
        unknown = unknown_flags(beam_args)
        if unknown:
            self.error(f"unknown flags: {' '.join(unknown)} (neither this job's nor Beam's)")
        return args, beam_args


def add_verbose_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="Show Beam's logs and the runner's (quiet by default).")


def main(run, argv=None) -> int:
    """Runs `run(argv, console)` for a person at a terminal; returns the exit code: 0, 1 for a
    user error (one line), 130 when stopped; a bad flag exits 2 (argparse)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    verbose = "-v" in argv or "--verbose" in argv
    logs.set_verbose(verbose)
    console = Console(enabled=True)
    start = time.monotonic()
    try:
        run(argv, console)
    except (UserError, FileNotFoundError, UnreadableAvroFile, WeakKey) as e:  # each says what to fix
        console.say(f"error: {e}")
        return 1
    except KeyboardInterrupt:
        console.say(console.stop_note)
        return 130
    console.say(f"done in {time.monotonic() - start:.0f} s")
    return 0
