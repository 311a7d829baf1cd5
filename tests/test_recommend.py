"""The content-recommendation job end to end, and the impression labelling it relies on."""
import collections
import json
import pickle

import apache_beam as beam
import fastavro
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to

import simulator
from core.features import PROFILES
from models import serde
from stores.online import open_online_store
from core.publishing import load_version
from core import progressive
from stores.registry import open_registry
from core.interactions import invalid_reason
from core.records import Prediction, Row
from core.scoring import score
from pipelines import recommend
from pipelines.options import pipeline_options
from transforms.recsys.labels import NO_IMPRESSION, LabelImpressions

WINDOW_MS = 60_000


def _row(event_id, kind, t, impression_id=None, user="u1"):
    fields = {"event_id": event_id, "event_type": kind, "event_time": t, "user_id": user,
              "item_id": "i1", "item_genres": ["drama"], "impression_id": impression_id,
              "position": 1 if kind == "impression" else None, "device": "tv", "watch_seconds": None}
    return beam.window.TimestampedValue(Row(event_id, t, fields), t / 1000)


def _at(value, t=beam.DoFn.TimestampParam):
    """An output with its timestamp (ms)."""
    return value, t.micros // 1000


LABELS_AT = [(("imp1", True, 61_000), 61_000), (("imp2", False, 62_000), 62_000), (("imp3", False, 62_500), 62_500)]
# c3 is refused when imp3 arrives, at imp3's time; c9 when its window closes
DEAD_AT = [(("duplicate impression", "imp1"), 6_000), ((NO_IMPRESSION, "c3"), 2_500),
           ((NO_IMPRESSION, "c2"), 70_000), ((NO_IMPRESSION, "c9"), 100_000)]


def _check_labels(out, dead_letter_times=True):
    """Without `dead_letter_times`, dead letters without their times: on a stream, c2 (after
    imp2's window) may come after imp2's window closed (the watermark may pass 62 s while c2,
    at 70 s, is still on its way), and is then refused when its own wait ends, at 130 s."""
    assert_that(out.examples | beam.Map(lambda e: (e.event_id, e.y, e.event_time)) | "At" >> beam.Map(_at),
                equal_to(LABELS_AT))
    assert_that(out.joined_outcomes | "JoinedAt" >> beam.Map(_at), equal_to([("c1", 5_000)]), label="Joined")
    dead = out.dead_letters | beam.Map(lambda d: (d.reason, json.loads(d.payload)["event_id"]))
    if dead_letter_times:
        assert_that(dead | "DeadAt" >> beam.Map(_at), equal_to(DEAD_AT), label="Dead")
    else:
        assert_that(dead, equal_to([d for d, _ in DEAD_AT]), label="Dead")


def test_labels_by_outcome_within_the_window_in_streaming():
    stream = (TestStream()
              .add_elements([_row("imp1", "impression", 1_000), _row("imp2", "impression", 2_000),
                             _row("c3", "click", 2_000, "imp3")])        # arrives first, happened before
              .add_elements([_row("c1", "click", 5_000, "imp1"), _row("imp3", "impression", 2_500),
                             _row("imp1", "impression", 6_000)])         # duplicate impression
              .advance_watermark_to(30)
              .add_elements([_row("c2", "click", 70_000, "imp2"),        # after imp2's window
                             _row("c9", "click", 40_000, "imp9")])       # no such impression
              .advance_watermark_to_infinity())
    with TestPipeline(options=pipeline_options(["--streaming"])) as p:
        _check_labels(p | stream | LabelImpressions(WINDOW_MS / 1000), dead_letter_times=False)


def test_labels_in_batch_are_those_of_the_stream():
    """The batch form (grouped, no state) over the same records as the streaming test above:
    the same labels, joins and dead letters, at the times the stateful form gives them."""
    rows = [_row("imp1", "impression", 1_000), _row("imp2", "impression", 2_000), _row("c3", "click", 2_000, "imp3"),
            _row("c1", "click", 5_000, "imp1"), _row("imp3", "impression", 2_500), _row("imp1", "impression", 6_000),
            _row("c2", "click", 70_000, "imp2"), _row("c9", "click", 40_000, "imp9")]

    with TestPipeline(options=pipeline_options([])) as p:
        _check_labels(p | beam.Create(rows) | LabelImpressions(WINDOW_MS / 1000))


def test_a_restarted_labeller_gives_replayed_records_the_fates_they_had(tmp_path):
    """Job 1 labels imp1 (joined c1) and imp2 (c2 outside its window) and dies; its offsets were
    committed up to imp1, so job 2 re-reads c1, imp2 and c2 with empty join state. Without
    the store, c1 would become an orphan (a second fate for an outcome already in a label)."""
    store = str(tmp_path / "labels.sqlite")

    def run(rows, check):
        stream = TestStream().add_elements(rows).advance_watermark_to_infinity()
        with TestPipeline(options=pipeline_options(["--streaming"])) as p:
            out = p | stream | LabelImpressions(WINDOW_MS / 1000, store=store)
            check(out)

    def first(out):
        assert_that(out.examples | beam.Map(lambda e: (e.event_id, e.y, e.origin)),
                    equal_to([("imp1", True, (("t", 0, 1, 1), ("t", 0, 2, 2))), ("imp2", False, (("t", 0, 3, 3),))]))
        assert_that(out.joined_outcomes, equal_to(["c1"]), label="Joined")
        assert_that(out.dead_letters | beam.Map(lambda d: json.loads(d.payload)["event_id"]),
                    equal_to(["c2"]), label="Dead")

    def again(out):  # the same fates, and imp2's label again (its delivery was not confirmed)
        assert_that(out.examples | beam.Map(lambda e: (e.event_id, e.y, e.origin, e.x["user_id"])),
                    equal_to([("imp2", False, (("t", 0, 3, 3),), "u1")]))
        assert_that(out.joined_outcomes, equal_to(["c1"]), label="Joined")
        assert_that(out.dead_letters | beam.Map(lambda d: (d.reason, json.loads(d.payload)["event_id"])),
                    equal_to([(NO_IMPRESSION, "c2")]), label="Dead")

    def at(row, offset):
        return beam.window.TimestampedValue(Row(row.value.event_id, row.value.event_time, row.value.fields,
                                                (("t", 0, offset, offset),)), row.timestamp)

    imp1, c1 = at(_row("imp1", "impression", 1_000), 1), at(_row("c1", "click", 5_000, "imp1"), 2)
    imp2, c2 = at(_row("imp2", "impression", 2_000), 3), at(_row("c2", "click", 70_000, "imp2"), 4)
    run([imp1, c1, imp2, c2], first)
    run([c2, c1, imp2], again)  # in any order


def test_validation_reasons():
    good = _row("e", "click", 5, "imp").value.fields
    assert invalid_reason(good) is None
    assert invalid_reason({**good, "user_id": ""}) == "empty user_id"
    assert invalid_reason({**good, "event_time": -1}) == "bad event_time -1"
    assert invalid_reason({**good, "event_type": "watch", "watch_seconds": -2.0}).startswith("negative")


def _job(tmp_path, name, *extra):
    events = tmp_path / "events.avro"
    if not events.exists():
        simulator.write_avro(simulator.generate(simulator.SimulatorConfig(impressions=600, seed=3)), str(events))
    out = tmp_path / name
    summary = recommend.run(["--events", str(events), "--output", str(out), *extra])
    return events, out, summary


def test_job_accounts_for_every_record_and_writes_a_report(tmp_path):
    events, out, summary = _job(tmp_path, "batch")
    counts = summary["counts"]
    with open(events, "rb") as f:
        records = list(fastavro.reader(f))
    dead = sum(v for k, v in counts.items() if k.startswith("dead_letters."))
    assert counts["rows_read"] == len(records)
    assert counts["predictions"] + counts["outcomes_joined"] + dead == len(records)
    assert counts["dead_letters.ValidateInteractions"] == sum(invalid_reason(r) is not None for r in records)
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    n = counts["predictions"]  # the main model's; the baselines predict the same impressions
    assert collections.Counter(p["model_key"] for p in predictions) == \
        {"recommender": n, "no_features": n, "popularity": n}
    assert all(p["y_true"] is not None for p in predictions)  # every served prediction was scored
    assert (out / "metrics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Progressive metrics" in (out / "report.md").read_text()
    # The summary's metrics are those of the predictions written, per model.
    served = [Prediction(**{**p, "y_proba": {k == "True": v for k, v in p["y_proba"].items()}})
              for p in predictions]
    for key in ("recommender", "no_features", "popularity"):
        scores = {"count": n, **score([p for p in served if p.model_key == key], "binary")}
        assert summary["models"][key] == pytest.approx(scores, rel=1e-12), key
    assert summary["progressive"] == summary["models"]["recommender"]


def test_the_default_run_beats_both_baselines(tmp_path):
    """The README's claim, on the job's defaults: the recommender (with entity features) has a
    higher ROC AUC and a lower log loss than the same model without them and than item
    popularity. (One run of the whole default job: about 1.5 minutes.)"""
    args, _ = recommend.parse_args([])
    assert (args.impressions, args.users, args.seed) == (20_000, 200, 7), "the README's figures are for these"
    models = recommend.run(["--output", str(tmp_path / "default")])["models"]
    main = models["recommender"]
    for baseline in ("no_features", "popularity"):
        assert main["rocauc"] > models[baseline]["rocauc"], (baseline, models)
        assert main["logloss"] < models[baseline]["logloss"], (baseline, models)


def test_job_gives_identical_predictions_in_batch_and_streaming(tmp_path):
    _, batch_out, batch = _job(tmp_path, "batch")
    _, stream_out, stream = _job(tmp_path, "stream", "--streaming")
    assert stream == batch
    by_id = lambda out: sorted((out / "predictions.jsonl").read_text().splitlines())  # noqa: E731
    assert by_id(stream_out) == by_id(batch_out)
    assert sorted((stream_out / "windowed_metrics.jsonl").read_text().splitlines()) == \
        sorted((batch_out / "windowed_metrics.jsonl").read_text().splitlines())
    # Both published their models: the stream a version per second or catch-up as it learned,
    # the batch run each final model; the stream's last is the batch's, state for state.
    batch_registry, stream_registry = (open_registry(str(o / "registry.sqlite")) for o in (batch_out, stream_out))
    for key in ("recommender", "no_features", "popularity"):
        (final,) = batch_registry.versions(key)
        versions = stream_registry.versions(key)
        assert [v.step for v in versions] == sorted({v.step for v in versions}) and len(versions) > 1, versions
        last = versions[-1]
        assert (last.step, last.clock_ms) == (final.step, final.clock_ms) == (batch["models"][key]["count"],
                                                                            final.clock_ms)
        # Each version carries the learner's progressive scores so far: the same at the end.
        assert last.metrics == final.metrics and final.metrics["count"] == final.step, (last.metrics, final.metrics)
        assert 0.5 < final.metrics["rocauc"] < 1 and final.metrics["logloss"] > 0, final.metrics
        models = [load_version(r, v, serde.store_key(r.path)) for r, v in ((batch_registry, final),
                                                                          (stream_registry, last))]
        # The models state for state; their scores compared above (a resumed object pickles
        # equal values with another memo layout).
        for model in models:
            vars(model).pop(progressive.ATTRIBUTE)
        assert pickle.dumps(models[0]) == pickle.dumps(models[1]), key
    # And the profiles: each entity's final one, as a plain loop over the valid events builds it.
    with open(tmp_path / "events.avro", "rb") as f:
        valid = sorted((r for r in fastavro.reader(f) if invalid_reason(r) is None), key=lambda r: (r["event_time"],
                                                                                                  r["event_id"]))
    for kind, (profile_type, field) in PROFILES.items():
        expected = collections.defaultdict(profile_type)
        for event in valid:
            expected[event[field]].apply(event)
        entities = sorted(expected)
        stores = [open_online_store(str(o / "online.sqlite")).get(kind, entities) for o in (batch_out, stream_out)]
        assert stores[0] == stores[1]
        assert stores[0] == {e: (json.loads(json.dumps(p.state())), p.last if kind == "user" else p.counters.t)
                             for e, p in expected.items()}

