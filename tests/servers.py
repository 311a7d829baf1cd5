"""A real serving process (`python -m serving`, uvicorn) for the tests, on a free port."""
import contextlib
import socket
import subprocess
import sys
import time

import requests


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(published, *args, env=None, healthy=True):
    """The URL of a server of what the main job `published` (its output folder, or a pair of
    registry and online store locations), with `args`; stopped at the end, which must be clean.
    Waits for /healthz to answer (200 if `healthy`)."""
    port = free_port()
    registry, online = (published if isinstance(published, tuple)
                        else (published / "registry.sqlite", published / "online.sqlite"))
    process = subprocess.Popen([sys.executable, "-m", "serving", "--port", str(port), "--poll_s", "0.1",
                                "--registry", str(registry), "--online_store", str(online), *args],
                               stderr=subprocess.PIPE, text=True, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if requests.get(f"{url}/healthz", timeout=1).status_code == (200 if healthy else 503):
                break
        except requests.ConnectionError:
            pass
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline, "the server did not come up"
        time.sleep(0.2)
    try:
        yield url
    finally:
        # uvicorn shuts down gracefully, then dies by the signal it caught; with workers, their
        # supervisor stops them and exits.
        process.terminate()
        code, errors = process.wait(20), process.stderr.read()
        assert code in (-15, 0) and "Traceback" not in errors, (code, errors)


def wait(condition, timeout_s=10):
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
