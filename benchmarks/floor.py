"""The floor of the serving benchmark: the latency of an app that does nothing, on the server's
stack and cores, under the same load from the same load process.

A row of `benchmarks.serving` measures the server *and* the host: the loopback network, the load
generator's own pauses, the scheduler, other tenants of a shared machine. On the 2-core machine
of the project, a do-nothing app answered 1,000 requests/s with p99 from 0.6 to 4.4 ms from one
10 s run to the next (a Go server as well as this one). So each measured row gets a floor row
beside it, run right before it: a p99 over the target with a floor near the target is the host's,
not the server's.

    >>> import asyncio
    >>> sent = []
    >>> async def receive(): return {"type": "http.request", "body": b"", "more_body": False}
    >>> async def send(message): sent.append(message)
    >>> asyncio.run(app({"type": "http", "method": "GET", "path": "/"}, receive, send))
    >>> sent[0]["status"], sent[1]["body"]
    (200, b'{}')
"""
from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import time

import requests

HEADERS = [(b"content-type", b"application/json"), (b"content-length", b"2")]


async def app(scope, receive, send):
    """Answers every HTTP request with 200 and `{}`, at once (raw ASGI: no framework)."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": b"{}"})


def start(port: int, cores: str) -> subprocess.Popen:
    """This app under uvicorn (uvloop and httptools, as the server), pinned to `cores`, answering."""
    server = subprocess.Popen(["taskset", "-c", cores, sys.executable, "-m", "uvicorn", "benchmarks.floor:app",
                               "--host", "127.0.0.1", "--port", str(port), "--lifespan", "off",
                               "--log-level", "warning", "--no-access-log"],
                              cwd=pathlib.Path(__file__).resolve().parent.parent)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and server.poll() is None:
        try:
            requests.get(f"http://127.0.0.1:{port}/", timeout=1)
            return server
        except requests.ConnectionError:
            time.sleep(0.05)
    server.kill()
    raise RuntimeError(f"the floor app did not answer on port {port} within 30 s")


def targets(port: int, folder: pathlib.Path) -> pathlib.Path:
    """vegeta's targets for the floor app."""
    path = folder / "floor.targets"
    path.write_text(json.dumps({"method": "GET", "url": f"http://127.0.0.1:{port}/"}) + "\n")
    return path
