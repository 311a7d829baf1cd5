"""Peak memory (RSS) of the main job as its input grows: is it bounded, or does it grow with
the records?

    .venv/bin/python -m benchmarks.memory --impressions 20000 200000 [--streaming] [--json out.json]

For each size it runs the main job (`python -m pipelines.recommend --impressions N --output
DIR`, batch on the default runner unless `--streaming`, which runs on Prism) as a subprocess,
samples every `--interval` seconds (0.5) the resident set size of the job's whole process
tree (the job and its children: Prism in streaming mode, SDK workers if any), read from
/proc (Linux), and reports per size: records read (from the job's summary.json), wall time,
peak RSS of the tree and of the job process alone. 20,000 impressions make about 25k records
with the simulator's defaults, 200,000 about 250k.

On Flink (`--flink`, run from `.venv-flink` with `$(bash scripts/flink.sh runner-args)`), the
job's work happens in the cluster, not under the client: each sample then also sums the
TaskManagers and the Python worker pool (their pids in `.run/flink/pid/`), reported as
`peak_rss_cluster_mb` beside their RSS before the run (`rss_cluster_before_mb`; the pool and
the JVMs live on between runs, so the growth is what the run added).

The tree's RSS is a sum over its processes, so pages they share count more than once: an
upper bound. A sample every 0.5 s can miss a shorter peak. Not a test: it reports, it does
not assert.

    .venv-flink/bin/python -m benchmarks.memory --impressions 20000 --flink \
        $(bash scripts/flink.sh runner-args) --parallelism=2
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGE = os.sysconf("SC_PAGE_SIZE")


def children_of() -> dict[int, list[int]]:
    """Parent pid -> child pids, for every process visible in /proc."""
    tree: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = pathlib.Path(entry.path, "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])  # after "pid (comm) state"
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def rss(pid: int) -> int:
    """Resident set size of one process in bytes (0 if it is gone)."""
    try:
        return int(pathlib.Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


def descendants(root: int) -> list[int]:
    """`root` and every process under it (children, their children, ...)."""
    tree, found, todo = children_of(), [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(tree.get(pid, ()))
    return found


def tree_rss(root: int) -> tuple[int, int]:
    """(RSS of `root` and all its descendants, RSS of `root` alone), in bytes."""
    return sum(rss(pid) for pid in descendants(root)), rss(root)


def flink_pids() -> list[int]:
    """The local Flink cluster's TaskManagers and worker pool (`scripts/flink.sh`)."""
    pids = []
    for name in ("flink-streamml-taskexecutor.pid", "workers.pid"):
        path = ROOT / ".run" / "flink" / "pid" / name
        pids += [int(line) for line in (path.read_text().split() if path.exists() else []) if line.isdigit()]
    if not pids:
        raise SystemExit("--flink: no TaskManager or worker pool pids in .run/flink/pid (bash scripts/flink.sh start)")
    return pids


def cluster_rss(pids: list[int]) -> int:
    return sum(tree_rss(pid)[0] for pid in pids)


def measure(impressions: int, streaming: bool, interval: float, output: str, extra: list[str],
            flink: bool = False) -> dict:
    """Runs the main job once at `impressions`; its records, wall time and peak RSS."""
    command = [sys.executable, "-m", "pipelines.recommend", "--impressions", str(impressions),
               "--output", output, *(["--streaming"] if streaming else []), *extra]
    cluster = flink_pids() if flink else []
    cluster_before = peak_cluster = cluster_rss(cluster)
    started = time.monotonic()
    job = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak_tree = peak_job = samples = 0
    while job.poll() is None:
        total, alone = tree_rss(job.pid)
        peak_tree, peak_job, samples = max(peak_tree, total), max(peak_job, alone), samples + 1
        peak_cluster = max(peak_cluster, cluster_rss(cluster))
        time.sleep(interval)
    wall = time.monotonic() - started
    log = job.stdout.read()
    if job.returncode != 0:
        raise SystemExit(f"the job failed at {impressions:,} impressions (exit {job.returncode}):\n{log[-3000:]}")
    summary = json.loads(pathlib.Path(output, "summary.json").read_text())
    return {"impressions": impressions, "records": summary["counts"].get("rows_read"),
            "mode": "streaming" if streaming else "batch", "wall_s": round(wall, 1),
            "peak_rss_mb": round(peak_tree / 2**20, 1), "peak_rss_job_mb": round(peak_job / 2**20, 1),
            "samples": samples, **({"rss_cluster_before_mb": round(cluster_before / 2**20, 1),
                                    "peak_rss_cluster_mb": round(peak_cluster / 2**20, 1)} if flink else {})}


def table(results: list[dict]) -> str:
    flink = "peak_rss_cluster_mb" in results[0]
    lines = ["| impressions | records | mode | wall s | peak RSS MB (tree) | peak RSS MB (job) |"
             + (" Flink TMs + pool MB: before / peak |" if flink else ""),
             "|---:|---:|---|---:|---:|---:|" + ("---:|" if flink else "")]
    lines += [f"| {r['impressions']:,} | {r['records']:,} | {r['mode']} | {r['wall_s']:.0f} | "
              f"{r['peak_rss_mb']:.0f} | {r['peak_rss_job_mb']:.0f} |"
              + (f" {r['rss_cluster_before_mb']:.0f} / {r['peak_rss_cluster_mb']:.0f} |" if flink else "")
              for r in results]
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory", description=__doc__.split("\n\n")[0])
    parser.add_argument("--impressions", type=int, nargs="+", default=[20_000, 200_000],
                        help="simulated impressions per run (20,000 ~ 25k records)")
    parser.add_argument("--streaming", action="store_true", help="run the job on the streaming runner (Prism)")
    parser.add_argument("--flink", action="store_true",
                        help="also sample the local Flink cluster's TaskManagers and worker pool")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between RSS samples")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--keep", help="keep each run's output under this folder (default: a temporary one)")
    args, extra = parser.parse_known_args(argv)  # anything else goes to the job
    results = []
    with tempfile.TemporaryDirectory(prefix="streamml-memory-") as scratch:
        for n in args.impressions:
            output = str(pathlib.Path(args.keep or scratch, f"recommend-{n}"))
            result = measure(n, args.streaming, args.interval, output, extra, args.flink)
            results.append(result)
            print(f"{n:,} impressions: {result['records']:,} records in {result['wall_s']:.0f} s, "
                  f"peak RSS {result['peak_rss_mb']:,.0f} MB (job alone {result['peak_rss_job_mb']:,.0f} MB)"
                  + (f", Flink TaskManagers + worker pool {result['rss_cluster_before_mb']:,.0f} -> "
                     f"{result['peak_rss_cluster_mb']:,.0f} MB" if args.flink else ""), flush=True)
    print(table(results))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
