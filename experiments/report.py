"""An experiment's report: Markdown with the decision, the variants' figures and the events,
and a PNG of the metric over time per variant and of the effect's interval (or the canary's
weight, or the bandit's probabilities) over time. Written by the experiment's owner."""
from __future__ import annotations

import json
import pathlib

from experiments.config import Experiment

NOTES = {
    "ab": "The test is an always-valid mixture SPRT on user-level CTR (delta method), checked at every "
          "owner check; the interval is its 95% confidence sequence, valid at every peek. Users enrolled "
          "during the plan's burn-in are {burn_in}: a new variant's novelty (a CTR that starts high and "
          "decays) would otherwise be shipped as a lasting lift.",
    "canary": "Each stage advances only when the canary's log loss is worse than the baseline's (control "
              "users of the same share) by less than the stage's margin with 95% confidence; it aborts "
              "when worse with confidence, when its error rate is over its bound with confidence, or when "
              "the p99 of its latest answers is over its bound (both as served, before labels); a stage "
              "still inconclusive after its extensions aborts. Log loss leaves out the requests the canary "
              "failed (the control answered them): they count as errors.",
    "bandit": "Thompson sampling on Beta posteriors of each variant's CTR from the delayed labels; every "
              "impression logs the probability of its variant, for off-policy estimates.",
    "shadow": "The shadow scores the requests the control serves, off the request path; only the control's "
              "answers reach users. Its own ranking is never shown, so it gets no labels of its own: "
              "compare it pairwise on the control's impressions, or estimate it off-policy from the "
              "logged propensities.",
}


def write(out: str, experiment: Experiment, history: list[dict], events: list[dict], state: dict) -> None:
    folder = pathlib.Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "history.jsonl").write_text("".join(json.dumps(h, default=str) + "\n" for h in history))
    _plot(folder / "report.png", experiment, history)
    (folder / "report.md").write_text(_markdown(experiment, history, events, state))


def _markdown(experiment: Experiment, history: list[dict], events: list[dict], state: dict) -> str:
    lines = [f"# Experiment {experiment.name} ({experiment.kind})", "", _status(experiment, state), "",
             "| variant | model | users | impressions | clicks | CTR | log loss | requests | errors | p99 ms |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, variant in experiment.variants.items():
        s = state.get("summary", {}).get(name, {})
        lines.append(f"| {name} | {variant.model} | {s.get('users', 0)} | {s.get('impressions', 0)} | "
                     f"{s.get('clicks', 0)} | {_num(s.get('ctr'))} | {_num(s.get('log_loss'))} | "
                     f"{s.get('requests', 0)} | {s.get('errors', 0)} | {_num(s.get('p99_ms'))} |")
    test = state.get("test")
    if test:
        lines += ["", f"Effect (treatment - control CTR): {_num(test['estimate'])}, 95% confidence sequence "
                      f"[{_num(test['low'])}, {_num(test['high'])}]; relative lift {_num(test['lift'])} "
                      f"[{_num(test['lift_low'])}, {_num(test['lift_high'])}]; always-valid p = {_num(test['p_value'])}; "
                      f"sample-ratio p = {_num(test['srm_p'])}; users {test['users']} of a budget of {test['max_users']}."]
    if state.get("off_policy"):
        lines += ["", "Off-policy estimates of other policies' CTR (inverse propensity, from the logged choice "
                      "probabilities): " + ", ".join(f"{k} {_num(v)}" for k, v in state["off_policy"].items()) + "."]
    shadow = state.get("shadow")
    if shadow:
        lines += ["", f"Shadow against control on control's {shadow['paired_impressions']} impressions it scored too: "
                      f"log loss {_num(shadow['log_loss_control'])} for control, shadow minus control "
                      f"{_num(shadow['log_loss_difference'])} per impression, 95% confidence sequence "
                      f"[{_num(shadow['low'])}, {_num(shadow['high'])}]. Its own ranking, by inverse propensity "
                      f"from the {shadow['matches']} impressions where control's exploration showed the shadow's "
                      f"item in its slot: CTR {_num(shadow['ips_ctr'])} (against control's "
                      f"{_num(state.get('summary', {}).get(experiment.control, {}).get('ctr'))})."]
    burn_in = "left out" if experiment.plan.get("burn_in") else "analysed (no burn-in in this plan)"
    lines += ["", NOTES[experiment.kind].format(burn_in=burn_in), "", "![over time](report.png)", "", "## Events", ""]
    lines += [_event(e) for e in events] or ["- none"]
    read = state.get("input")
    lines += ["", f"{len(history)} checks." + (
        f" Read {read['read']:,} records: {read['undecodable']:,} undecodable, {read['unusable']:,} impressions "
        "routed by this experiment unusable (a variant the file does not name, or no bucket), skipped."
        if read else "")]
    return "\n".join(lines) + "\n"


def _event(e: dict) -> str:
    details = json.dumps({k: v for k, v in e.items() if k not in ("event", "reason", "guardrails")})
    guardrails = "; ".join(f"{metric} {g['verdict']}, canary / baseline - 1 in [{_num(g['low'])}, {_num(g['high'])}]"
                           for metric, g in (e.get("guardrails") or {}).items())
    return f"- {e.get('event')}: {e.get('reason', '')}{f' ({guardrails})' if guardrails else ''} {details}"


def _status(experiment: Experiment, state: dict) -> str:
    if "decision" in state:
        d = state["decision"]
        return f"**Decision: {d['action']}** ({d['reason']}): everyone is served `{d['variant']}`."
    if experiment.kind == "canary":
        return f"**Canary: {state.get('state', 'ramping')}**, at {state.get('weight', experiment.ramp.stages[0].weight):.0%} of users."
    if experiment.kind == "bandit":
        probabilities = ", ".join(f"{k} {v:.3f}" for k, v in (state.get("probabilities") or {}).items())
        return f"**Bandit**: choice probabilities now {probabilities or 'uniform'}."
    return "**continue**: no decision yet." if experiment.kind == "ab" else "**Shadow**: comparing."


def _num(x) -> str:
    return "-" if x is None else f"{x:.4g}"


def _plot(path: pathlib.Path, experiment: Experiment, history: list[dict]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    t = [(h["at_ms"] - history[0]["at_ms"]) / 1000 for h in history] if history else []
    for name in experiment.variants:
        top.plot(t, [h["summary"].get(name, {}).get("ctr") for h in history], label=name)
    top.set_ylabel("CTR (labelled)")
    top.legend()
    if experiment.kind == "ab":
        tests = [h.get("test") or {} for h in history]
        bottom.plot(t, [x.get("estimate") for x in tests], color="black", label="treatment - control")
        bottom.fill_between(t, [x.get("low", float("nan")) for x in tests], [x.get("high", float("nan")) for x in tests],
                            alpha=0.3, label="95% confidence sequence")
        bottom.axhline(0, color="grey", linewidth=0.5)
    elif experiment.kind == "canary":
        bottom.step(t, [h.get("weight") for h in history], where="post", label="canary weight")
    elif experiment.kind == "bandit":
        for name in experiment.variants:
            bottom.plot(t, [(h.get("probabilities") or {}).get(name) for h in history], label=name)
        bottom.set_ylabel("P(choice)")
    bottom.set_xlabel("seconds since the owner started")
    bottom.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)
