"""The notes of a report: what the figures measure, and where to read them with care."""
from __future__ import annotations

from benchmarks.throughput.models import MINI_BATCH_MODELS
from benchmarks.throughput.runs import STARTUP_EVENTS


def notes(results, args, keys, modes) -> list[str]:
    out = []
    for k in keys:
        if k > args.events:
            out.append(f"{k:,} keys > {args.events:,} events: only {args.events:,} keys get events")
    for mode in modes:
        capped = sorted({(r["keys"], r[f"{mode}_events"]) for r in results
                         if r.get(f"{mode}_events") and r[f"{mode}_events"] < r["events"]})
        if capped:
            out.append(f"{mode} runs over fewer events than bare river (keys: events): "
                       + ", ".join(f"{k:,}: {e:,}" for k, e in capped)
                       + f"; ratio_{mode} compares with bare river over those same events")
    own_key = sorted({(m, r[f"{m}_events"]) for r in results for m in modes
                      if r.get(f"{m}_events") and r["keys"] >= r[f"{m}_events"]})
    if own_key:
        out.append("at keys >= a run's events every event has its own key: one measurement, "
                   "shared by every such key count (" + ", ".join(
                       f"{m} over {e:,} events" for m, e in own_key) + ")")
    if any(not r.get(f"{m}_all_predicted", True) or not r.get(f"{m}_rocauc_equals_raw", True)
           for r in results for m in modes):
        out.append("WARNING: a pipeline run did not predict every event, or its ROC AUC differs "
                   "from bare river's over the same events (see *_all_predicted, *_rocauc_equals_raw)")
    out.append("bare river calls predict_proba_one + learn_one; so does the pipeline (y_pred is the "
               "argmax of the probabilities, as river's predict_one), which also reads the Avro "
               "file, groups events per key (batch) or keeps them in Beam state (streaming), and "
               "writes predictions, windowed and final metrics")
    if "minibatch" in modes:
        out.append("minibatch not measured where every key gets one event (keys >= events)")
        out.append(f"minibatch: the batch pipeline with --mini_batch {args.mini_batch} (opt-in, NOT "
                   "the same as per-event learning) on the model's mini-batch twin "
                   f"({MINI_BATCH_MODELS}); ratio_minibatch = its eps / bare per-event river on the "
                   "row's model, ratio_minibatch_same_model = / bare per-event river on the twin; "
                   "compare minibatch_rocauc with raw_rocauc for accuracy")
    noisy = rss_below_noise(results)
    if noisy:
        out.append("RSS/key within noise (difference < 10% of the peak, e.g. buffered events and "
                   "GC timing dominate): " + ", ".join(noisy))
    out.append("model size grows with the distinct features a key has seen, so RSS/key "
               "depends on events per key (events / keys)")
    if "batch" in modes:
        out.append("floor = the batch pipeline's work (decode, examples, predict + learn per key in "
                   "event order, windowed and final metrics, JSON lines) in one plain Python pass of "
                   "the project's own functions, no Beam: ratio floor = floor eps / bare river eps is "
                   "the most ratio_batch can reach with this work; batch / floor is what Beam keeps")
    out.append("eps excl. start-up = events / (wall - wall of the same pipeline over "
               f"{STARTUP_EVENTS} events, 1 key)")
    return out


def rss_below_noise(results: list[dict], share: float = 0.1) -> list[str]:
    """Per-key figures whose RSS difference is under `share` of the peak: noise, not models."""
    out = []
    for r in results:
        for what, per_key in r["rss_per_key_kb"].items():
            events = r["events"] if what == "raw" else r[f"{what}_events"]
            used = min(r["keys"], events)
            if per_key is not None and abs(per_key * used / 1024) < share * r["peak_rss_mb"][what]:
                out.append(f"{r['model']} {what} {r['keys']:,} keys")
    return out
