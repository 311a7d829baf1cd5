"""The report as Markdown tables: events/s and ratios, the floor, memory and wall time,
start-up, the mini-batch mode, the notes, and the profiles."""
from __future__ import annotations

import json

from benchmarks.throughput.runs import STARTUP_EVENTS


def markdown(report: dict) -> str:
    modes = report["config"]["modes"]
    head = ["model", "keys", "events", "raw eps"]
    for mode in modes:
        head += [f"{mode} events", f"raw eps ({mode} events)", f"{mode} eps",
                 f"{mode} eps excl. start-up", f"ratio {mode}", f"ratio {mode} excl. start-up"]
    lines = [_md_row(head), _md_row(["---"] * len(head))]
    for r in report["results"]:
        cells = [r["model"], _fmt(r["keys"]), _fmt(r["events"]), _fmt(r["raw_river_eps"])]
        for mode in modes:
            cells += [_fmt(r.get(f"{mode}_events")), _fmt(r.get(f"raw_river_eps_{mode}_events")),
                      _fmt(r.get(f"pipeline_{mode}_eps")), _fmt(r.get(f"pipeline_{mode}_eps_excl_startup")),
                      _fmt(r.get(f"ratio_{mode}")), _fmt(r.get(f"ratio_{mode}_excl_startup"))]
        lines.append(_md_row(cells))
    if "batch" in modes:
        parts = list(next((r["floor_parts_us_per_event"] for r in report["results"]
                           if r.get("floor_parts_us_per_event")), {}))
        head = (["model", "keys", "batch events", "floor eps", "ratio floor (max batch ratio)",
                 "batch / floor (excl. start-up)", "floor eps without predict+learn"]
                + [p.removesuffix("_us").replace("_", " ") + " us/ev" for p in parts])
        lines += ["", _md_row(head), _md_row(["---"] * len(head))]
        for r in report["results"]:
            lines.append(_md_row([r["model"], _fmt(r["keys"]), _fmt(r.get("batch_events")),
                                  _fmt(r.get("floor_eps")), _fmt(r.get("ratio_floor")),
                                  _fmt(r.get("batch_vs_floor_excl_startup")),
                                  _fmt(r.get("floor_eps_without_predict_learn"))]
                                 + [_fmt(r.get("floor_parts_us_per_event", {}).get(p)) for p in parts]))
    whats = ["raw"] + modes
    head = (["model", "keys"] + [f"peak RSS MB {w}" for w in whats]
            + [f"RSS/key KB {w}" for w in whats] + [f"wall s {w}" for w in whats])
    lines += ["", _md_row(head), _md_row(["---"] * len(head))]
    for r in report["results"]:
        walls = [r["raw_wall_s"]] + [r.get(f"pipeline_{m}_wall_s") for m in modes]
        lines.append(_md_row([r["model"], _fmt(r["keys"])]
                             + [_fmt(r["peak_rss_mb"].get(w)) for w in whats]
                             + [_fmt(r["rss_per_key_kb"].get(w)) for w in whats]
                             + [_fmt(w) for w in walls]))
    startups = sorted({(m, r["model"], r[f"{m}_startup_s"]) for r in report["results"] for m in modes
                       if r.get(f"{m}_startup_s") is not None})
    lines += ["", f"Start-up (wall of a {STARTUP_EVENTS}-event run): "
              + "; ".join(f"{m} {model} {s:.1f} s" for m, model, s in startups)]
    if "minibatch" in modes:
        lines += ["", _md_row(["model", "keys", "mini-batch", "minibatch eps", "ratio vs raw (model)",
                               "ratio vs raw (twin)", "ROC AUC minibatch", "ROC AUC raw (model)",
                               "ROC AUC raw per event (twin)"]), _md_row(["---"] * 9)]
        for r in report["results"]:
            if r.get("minibatch_events"):
                lines.append(_md_row([r["model"], _fmt(r["keys"]), r["minibatch_size"],
                                      _fmt(r["pipeline_minibatch_eps"]), _fmt(r["ratio_minibatch"]),
                                      _fmt(r["ratio_minibatch_same_model"]), _fmt(r["minibatch_rocauc"]),
                                      _fmt(r["raw_rocauc"]), _fmt(r["raw_rocauc_minibatch_model_per_event"])]))
    lines += [f"- {n}" for n in report["notes"]]
    lines += [f"- run time: {json.dumps(report['timings'])}"]
    for profile in report["profiles"]:
        lines += ["", profile_markdown(profile)]
    return "\n".join(lines)


def profile_markdown(profile: dict, top: int = 25) -> str:
    lines = [f"Batch profile: {profile['model']}, {profile['keys']:,} keys, {profile['events']:,} "
             f"events; {profile['profiled_s']} s under cProfile", "",
             "| hot spot (cumulative, overlapping) | s | % |", "|---|---|---|"]
    lines += [f"| {h['what']} | {h['cum_s']} | {h['cum_pct']} |" for h in profile["hot_spots"]]
    lines += ["", "| function (top cumulative) | calls | own s | cum s | cum % |", "|---|---|---|---|---|"]
    lines += [f"| `{e['function']}` | {e['calls']:,} | {e['tottime_s']} | {e['cumtime_s']} | {e['cum_pct']} |"
              for e in profile["top_cumulative"][:top]]
    lines += ["", "| function (top own time) | calls | own s | own % |", "|---|---|---|---|"]
    lines += [f"| `{e['function']}` | {e['calls']:,} | {e['tottime_s']} | {e['tot_pct']} |"
              for e in profile["top_own_time"][:15]]
    lines += ["", "| own time by package | s | % |", "|---|---|---|"]
    lines += [f"| {g['package']} | {g['own_s']} | {g['pct']} |" for g in profile["own_time_by_package"]]
    return "\n".join(lines)


def _md_row(cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and abs(value) < 10:
        return f"{value:.3g}"
    return f"{value:,.0f}"
