"""The report as a bar chart: events/s per configuration, log scale."""
from __future__ import annotations


def plot(report: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = report["config"]["modes"]
    series = [("raw_river_eps", "bare river (all events)")]
    if "batch" in modes:
        series += [("floor_eps", "batch work without Beam (batch events)")]
    for mode in modes:
        series += [(f"raw_river_eps_{mode}_events", f"bare river ({mode} events)"),
                   (f"pipeline_{mode}_eps", f"{mode} pipeline"),
                   (f"pipeline_{mode}_eps_excl_startup", f"{mode} pipeline excl. start-up")]
    results = report["results"]
    labels = [f"{r['model']}\n{r['keys']:,} keys\n" + "\n".join(
        f"{m}: {r[f'{m}_events']:,} ev" for m in modes if r.get(f"{m}_events")) for r in results]
    width = 0.85 / len(series)
    colors = plt.get_cmap("tab20").colors
    fig, ax = plt.subplots(figsize=(max(9, 2.4 * len(results)), 6))
    for i, (field, label) in enumerate(series):
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(results))]
        ax.bar(xs, [r.get(field) or 0 for r in results], width, label=label, color=colors[i % len(colors)])
    ax.set_xticks(range(len(results)), labels, fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("events / s (log scale)")
    ax.set_title(f"Prequential throughput, {report['config']['events']:,} simulated impressions")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
