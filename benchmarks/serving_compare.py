"""What an experiment costs the served latency: /recommendations and /predict from servers
without and with `--experiment` (e.g. a shadow), alternating `--repeat` times over the same
stores, and the median rise of p99 per endpoint and rate (runs on a shared machine differ by
milliseconds: one pair says little).

    .venv/bin/python -m benchmarks.serving_compare --experiment docs/experiments/shadow-no-features.json \\
        [--recommend_rates 50,100] [--predict_rates 200,500] [--duration 15] [--repeat 3] [--json out.json]

The server is pinned to `--server_cores`, vegeta to `--load_cores` (`benchmarks.serving`).
"""
from __future__ import annotations

import argparse
import json
import pathlib
import tempfile
import time

from benchmarks.serving import SETTLE_S, attack, publish, start_server, targets, vegeta


def compare(args) -> dict:
    """/recommendations without and with the experiment, alternating servers `--repeat` times
    over the same stores: the p99 each time, and the median difference (runs on a shared
    machine differ by milliseconds: one pair says little)."""
    binary = vegeta()
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        out = pathlib.Path(tmp)
        publish(args.impressions, out)
        rates = {"recommend": args.recommend_rates, "predict": args.predict_rates}
        files = {endpoint: targets(out, args.port, endpoint) for endpoint, r in rates.items() if r}
        rows, shadow = {"without": [], "with": []}, []
        for _ in range(args.repeat):
            for arm, experiment in (("without", None), ("with", args.experiment)):
                server, _ = start_server(out, args.port, args.server_cores, args.workers, None, experiment)
                try:
                    for endpoint, target_file in files.items():
                        attack(binary, target_file, rates[endpoint][0], 2, args.load_cores)  # warm-up
                        for rate in rates[endpoint]:
                            time.sleep(SETTLE_S)
                            rows[arm].append({**attack(binary, target_file, rate, args.duration, args.load_cores),
                                              "endpoint": endpoint})
                    if experiment:
                        shadow.append(_shadow_counts(args.port))
                finally:
                    server.terminate()
                    server.wait(30)
    results = {"experiment": args.experiment, "repeat": args.repeat, "server_cores": args.server_cores,
               "load_cores": args.load_cores, "duration_s": args.duration, "shadow_requests": shadow}
    for endpoint in files:
        results[endpoint] = {}
        for rate in rates[endpoint]:
            p99 = {arm: [r["p99_ms"] for r in rows[arm] if (r["endpoint"], r["rate"]) == (endpoint, rate)] for arm in rows}
            deltas = sorted(w - o for w, o in zip(p99["with"], p99["without"]))
            results[endpoint][rate] = {"p99_without_ms": p99["without"], "p99_with_ms": p99["with"],
                                       "median_p99_rise_ms": deltas[len(deltas) // 2]}
    return results


def _shadow_counts(port: int) -> dict:
    """The server's shadow jobs by outcome (scored, failed, no_model, dropped), if it has a shadow."""
    import requests

    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return {line.split('"')[1]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines() if line.startswith("streamml_shadow_requests{")}


def _rates(text: str) -> list[int]:
    return [] if text == "none" else [int(r) for r in text.split(",") if r]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.serving_compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiment", required=True, help="the experiment file the second server routes by")
    parser.add_argument("--recommend_rates", type=_rates, default=[50, 100], help="(default: 50,100; none: skip)")
    parser.add_argument("--predict_rates", type=_rates, default=[200, 500], help="(default: 200,500; none: skip)")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per rate (default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=3, help="pairs of servers (default: %(default)s)")
    parser.add_argument("--impressions", type=int, default=20_000, help="the main job's size (default: %(default)s)")
    parser.add_argument("--server_cores", default="0")
    parser.add_argument("--load_cores", default="1")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--port", type=int, default=18123)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    results = compare(args)
    print(json.dumps(results, indent=2))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
