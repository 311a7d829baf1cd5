"""The job's report: a Markdown summary and a PNG of the windowed metrics over time."""
from __future__ import annotations

import datetime
import json
import os

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402


def read_windowed_metrics(path: str, scope: str = "*") -> list[dict]:
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return sorted((r for r in rows if r["scope"] == scope), key=lambda r: r["window_start"])


def plot(rows: list[dict], path: str, title: str) -> None:
    times = [datetime.datetime.fromtimestamp(r["window_start"] / 1000, datetime.timezone.utc) for r in rows]
    names = sorted({name for r in rows for name in r["metrics"]})
    fig, axes = plt.subplots(len(names), 1, figsize=(9, 2.2 * len(names)), sharex=True)
    for ax, name in zip(axes if len(names) > 1 else [axes], names):
        ax.plot(times, [r["metrics"].get(name) for r in rows], marker=".")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write(out: str, summary: dict) -> str:
    """Writes `metrics.png` and `report.md` into `out`; returns the report's path."""
    rows = read_windowed_metrics(os.path.join(out, "windowed_metrics.jsonl"))
    if rows:
        plot(rows, os.path.join(out, "metrics.png"), "Prequential metrics per window (all keys)")
    lines = ["# Online learning report", "", "## Progressive metrics (predict, then learn)", "",
             "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |"
              for k, v in summary["progressive"].items()]
    lines += ["", "## Record accounting", "", "| what | records |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in summary["counts"].items()]
    lines += ["", "## Windowed metrics", "", "![metrics over time](metrics.png)" if rows else "(none)", ""]
    lines += ["| window start (UTC) | predictions | " + " | ".join(sorted(rows[0]["metrics"])) + " |",
              "|---" * (2 + len(rows[0]["metrics"])) + "|"] if rows else []
    for r in rows:
        start = datetime.datetime.fromtimestamp(r["window_start"] / 1000, datetime.timezone.utc)
        values = " | ".join(f"{r['metrics'][k]:.4f}" for k in sorted(r["metrics"]))
        lines.append(f"| {start:%Y-%m-%d %H:%M} | {r['count']} | {values} |")
    path = os.path.join(out, "report.md")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path
