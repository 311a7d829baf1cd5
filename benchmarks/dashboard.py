"""How fast an event reaches the live dashboard's page (issue 17: within 2 s).

    .venv/bin/python -m benchmarks.dashboard [--events 20] [--rate 200] [--json out.json]

The main job publishes its model; a server (`python -m serving`, as `benchmarks.serving` starts
it) serves it and reads the job's alerts file, under vegeta's constant `--rate` of /predict from
another process.
Debian's chromium (headless, Playwright) holds `/dashboard` open. Then, `--events` times, one
second or so apart, alternately: an alert is appended to the alerts file (as a guarded job
writes it), or the model is rolled back (`pipelines.rollback`: a new version in the registry).
Each event's delay is from the moment it was written to the moment the page drew it (the
page's clock, `window.__seen`; the same machine's clock as this process's).
"""
from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import subprocess
import tempfile
import threading
import time


from benchmarks.serving import ROOT, attack, publish, start_server, targets, vegeta
from pipelines import rollback


def run(args) -> dict:
    from playwright.sync_api import sync_playwright

    chromium = _chromium()
    binary = vegeta()
    with tempfile.TemporaryDirectory(prefix="bench-dashboard-") as tmp:
        out = pathlib.Path(tmp)
        publish(args.impressions, out)
        alerts = out / "alerts.jsonl"
        server, _ = start_server(out, args.port, "0-1", 1, extra=["--alerts", str(alerts)])
        url = f"http://127.0.0.1:{args.port}"
        try:
            load = {}
            loading = threading.Thread(target=lambda: load.update(attack(
                binary, targets(out, args.port, "predict"), args.rate, args.events * args.every_s + 6, "0-1")))
            loading.start()
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=chromium,
                                                     args=["--headless=new", "--no-sandbox", "--disable-gpu"])
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.goto(f"{url}/dashboard")
                page.wait_for_function("window.__seq > 0")
                time.sleep(2)
                delays = {"alert": [], "rollback": []}
                for i in range(args.events):
                    kind = "alert" if i % 2 == 0 else "rollback"
                    written = _write_event(kind, alerts, out, i)
                    page.wait_for_selector(f"li.event[data-id='{i + 1}']", timeout=30_000)
                    seen_ms = page.evaluate(f"window.__seen[{i + 1}]")
                    delays[kind].append(seen_ms / 1000 - written)
                    time.sleep(args.every_s)
                page.screenshot(path=str(args.screenshot), full_page=True)
                browser.close()
            loading.join()
        finally:
            server.terminate()
            server.wait(30)
    every = delays["alert"] + delays["rollback"]
    return {"events": len(every), "rate": args.rate, "load": load,
            "delay_s": {kind: _summary(d) for kind, d in {**delays, "all": every}.items()},
            "target_s": 2.0, "screenshot": str(args.screenshot)}


def _write_event(kind: str, alerts: pathlib.Path, out: pathlib.Path, i: int) -> float:
    """Writes the event; the wall-clock time it was written (the moment it exists)."""
    if kind == "alert":
        line = json.dumps({"signal": "alert", "kind": "drift", "model_key": "recommender", "event_time": i,
                           "reason": f"benchmark event {i}", "version": None}) + "\n"
        with open(alerts, "a") as f:
            f.write(line)
            f.flush()
            return time.time()
    rollback.run(["--registry", str(out / "registry.sqlite"), "--to", "1", "--reason", f"benchmark event {i}"])
    return time.time()


def _summary(values: list[float]) -> dict:
    values = sorted(values)
    return {"n": len(values), "median": round(statistics.median(values), 3),
            "p95": round(values[min(len(values) - 1, int(0.95 * len(values)))], 3), "max": round(values[-1], 3)}


def _chromium() -> str:
    done = subprocess.run(["bash", str(ROOT / "scripts" / "chromium.sh"), "install"], capture_output=True, text=True,
                          check=True)
    return next(line.split("=", 1)[1] for line in done.stdout.splitlines() if line.startswith("CHROMIUM="))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.dashboard", description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20)
    parser.add_argument("--every_s", type=float, default=1.3, help="seconds between events")
    parser.add_argument("--rate", type=int, default=200, help="/predict requests per second meanwhile")
    parser.add_argument("--impressions", type=int, default=4000)
    parser.add_argument("--port", type=int, default=18090)
    parser.add_argument("--screenshot", type=pathlib.Path, default=pathlib.Path("/tmp/dashboard.png"))
    parser.add_argument("--json", type=pathlib.Path)
    args = parser.parse_args(argv)
    result = run(args)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
