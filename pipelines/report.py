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


def plot(series: dict, path: str, title: str) -> None:
    """One panel per metric, one line per scope (model key): {scope: windowed rows}."""
    names = sorted({name for rows in series.values() for r in rows for name in r["metrics"]})
    fig, axes = plt.subplots(len(names), 1, figsize=(9, 2.2 * len(names)), sharex=True)
    for ax, name in zip(axes if len(names) > 1 else [axes], names):
        for scope, rows in sorted(series.items()):
            times = [datetime.datetime.fromtimestamp(r["window_start"] / 1000, datetime.timezone.utc) for r in rows]
            ax.plot(times, [r["metrics"].get(name) for r in rows], marker=".", label=scope)
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    if len(series) > 1:
        (axes[0] if len(names) > 1 else axes).legend(fontsize=8)
    fig.suptitle(title)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write(out: str, summary: dict) -> str:
    """Writes `metrics.png` and `report.md` into `out`; returns the report's path. With
    several models (`summary["models"]`), compares them, per window and overall."""
    path = os.path.join(out, "windowed_metrics.jsonl")
    models = summary.get("models") or {}
    scopes = sorted(models) if len(models) > 1 else ["*"]
    series = {scope: read_windowed_metrics(path, scope) for scope in scopes}
    table_scope = next((k for k, m in models.items() if m == summary["progressive"]), scopes[0])
    rows = series.get(table_scope) or series[scopes[0]]
    if rows:
        plot(series, os.path.join(out, "metrics.png"),
             "Metrics per window of labels, by model" if len(scopes) > 1 else "Prequential metrics per window")
    lines = ["# Online learning report", "", "## Progressive metrics (predict, then learn)", "",
             "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |"
              for k, v in summary["progressive"].items()]
    if len(models) > 1:
        names = sorted({n for m in models.values() for n in m if n != "count"})
        lines += ["", "## Models compared (same impressions, same delayed labels)", "",
                  "| model | predictions | " + " | ".join(names) + " |", "|---" * (2 + len(names)) + "|"]
        lines += [f"| {key} | {m['count']} | " + " | ".join(f"{m[n]:.4f}" for n in names) + " |"
                  for key, m in sorted(models.items())]
    if summary.get("hashing"):
        h = summary["hashing"]
        lines += ["", f"Hashed ids: {h['tokens']} distinct user and item ids in {h['hash_size']} buckets, "
                      f"collision rate {h['collision_rate']:.2%}."]
    lines += ["", "## Record accounting", "", "| what | records |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in summary["counts"].items()]
    lines += ["", f"## Windowed metrics ({'all' if table_scope == '*' else table_scope})", "", "![metrics over time](metrics.png)" if rows else "(none)", ""]
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


OUTPUTS = ("report.md", "metrics.png", "summary.json", "predictions", "windowed_metrics", "dead_letters", "alerts")


def summary_lines(summary: dict, out: str, main: str) -> list[str]:
    """The end of a run on one screen: record accounting, each model's metrics, the outputs.

    >>> s = {"counts": {"rows_read": 10, "predictions": 6, "outcomes_joined": 3,
    ...                 "dead_letters.ValidateInteractions": 1},
    ...      "models": {"m": {"count": 6, "rocauc": 0.61, "logloss": 0.3, "accuracy": 0.9}}}
    >>> print("\\n".join(summary_lines(s, "/nowhere", "m")))
    records: 10 read = 6 predictions + 3 outcomes joined + 1 dead letters (ValidateInteractions 1)
    model                ROC AUC  log loss  accuracy  predictions
    m (main)               0.610     0.300     0.900            6
    outputs in /nowhere/: (none)
    """
    counts = summary["counts"]
    dead = {k.split(".", 1)[1]: v for k, v in counts.items() if k.startswith("dead_letters.")}
    read, predicted, joined = counts.get("rows_read", 0), counts.get("predictions", 0), counts.get("outcomes_joined", 0)
    balance = "=" if read == predicted + joined + sum(dead.values()) else "!= (records unaccounted for)"
    lines = [f"records: {read:,} read {balance} {predicted:,} predictions + {joined:,} outcomes joined + "
             f"{sum(dead.values()):,} dead letters"
             + (f" ({', '.join(f'{stage} {n:,}' for stage, n in sorted(dead.items()))})" if dead else ""),
             f"{'model':<20}{'ROC AUC':>8}{'log loss':>10}{'accuracy':>10}{'predictions':>13}"]
    for key, m in sorted(summary.get("models", {}).items(), key=lambda kv: kv[0] != main):
        name = f"{key} (main)" if key == main else key
        lines.append(f"{name:<20}{m.get('rocauc', float('nan')):>8.3f}{m.get('logloss', float('nan')):>10.3f}"
                     f"{m.get('accuracy', float('nan')):>10.3f}{m.get('count', 0):>13,}")
    if "taste.alert.drift" in counts:
        lines.append(f"taste alarms: {counts['taste.alert.drift']:,} (each restarted the users' genre profiles)")
    present = sorted(f for f in (os.listdir(out) if os.path.isdir(out) else ())
                     if f.rsplit(".", 1)[0] in OUTPUTS or f in OUTPUTS)
    lines.append(f"outputs in {out.rstrip('/')}/: {', '.join(present) or '(none)'}")
    return lines


def published_lines(registry: str | None, model_keys: list[str], online: str | None) -> list[str]:
    """What the run published for the serving plane: each model's newest version, the profiles."""
    from stores.online import open_online_store
    from stores.registry import open_registry

    said = []
    if registry:
        reg = open_registry(registry)
        try:
            latest = {key: reg.latest(key) for key in model_keys}
        finally:
            reg.close()
        said.append("published models: " + ", ".join(f"{k} v{v.version}" if v else f"{k} (none)"
                                                     for k, v in latest.items()) + f" to {_shown(registry)}")
        said += [guard_line(k, v.metrics["guard"]) for k, v in latest.items() if v and "guard" in v.metrics]
    if online:
        store = open_online_store(online)
        try:
            counts = {kind: store.count(kind) for kind in ("user", "item")}
        finally:
            store.close()
        said.append(f"published profiles: {counts['user']:,} users, {counts['item']:,} items to {_shown(online)}")
    return said


def guard_line(key: str, guard: dict) -> str:
    """What a model's guard did (`monitoring.guard.Guard.summary`), in a line."""
    known = guard.get("known_good")
    line = (f"guard of {key}: {guard['quarantined']} users quarantined (their labels in the dead letters), "
            f"{guard['rollbacks']} rollbacks")
    if guard.get("recent_rollbacks"):
        last = guard["recent_rollbacks"][-1]
        line += f" (the last at label {last['at_step']:,} to label {last['to_step']:,}: {last['reason']})"
    return line + (f"; known-good: v{known['version']} (label {known['step']:,})" if known and known["version"]
                   else "; no known-good version yet")


def _shown(path: str) -> str:
    """A path as a person typed it: relative when under the current folder (a URL as it is)."""
    if "://" in path:
        return path
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative
