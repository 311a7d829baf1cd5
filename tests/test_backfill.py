"""The feature backfill: a snapshot up to a cut-off, then a stream from it, equals one stream."""
import uuid

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

import simulator
from core.features import reference_features
from core.interactions import invalid_reason
from core.kafka import ensure_topic, produce
from pipelines import backfill
from pipelines.options import pipeline_options
from stores import snapshots
from tests.test_features import _events, _stream
from transforms.features.entity import AddEntityFeatures
from transforms.io.kafka import DecodeAvro
from transforms.io.kafka_read import ReadFromKafka


def _history(tmp_path):
    """Valid events with planted leaks, plus the simulator's malformed records, in one file;
    the cut-off at an impression that has planted clicks at its very instant."""
    config = simulator.SimulatorConfig(impressions=300, seed=4, users=20, items=15, late_fraction=0.0,
                                      malformed_fraction=0.02)
    malformed = [e for e in simulator.generate(config) if invalid_reason(e) is not None]
    events = _events()
    leaked = sorted(e["event_time"] for e in events if e["event_id"].startswith("leak-"))
    cutoff = leaked[len(leaked) // 2]
    path = str(tmp_path / "history.avro")
    simulator.write_avro(sorted(events + malformed, key=lambda e: e["event_time"]), path)
    return events, malformed, cutoff, path


def test_snapshot_then_stream_gives_the_features_of_one_stream_over_all_history(tmp_path):
    events, malformed, cutoff, path = _history(tmp_path)
    store = str(tmp_path / "features.sqlite")
    summary = backfill.run(["--events", path, "--cutoff", str(cutoff), "--store", store,
                            "--output", str(tmp_path / "out")])

    before = [e for e in events if e["event_time"] < cutoff]
    later = [e for e in events if e["event_time"] >= cutoff]
    assert before and later and any(e["event_time"] == cutoff for e in later)
    counts = summary["counts"]
    assert counts["events_applied"] == len(before) and counts["events_after_cutoff"] == len(later)
    assert counts["profiles.user"] == len({e["user_id"] for e in before})
    assert counts["profiles.item"] == len({e["item_id"] for e in before})
    assert sum(v for k, v in counts.items() if k.startswith("dead_letters.")) == len(malformed) > 0

    # What a stream over the whole history computes (test_features proves the streaming stage
    # equals this reference) for the impressions from the cut-off on.
    whole = reference_features(events)
    expected = sorted((e["event_id"], sorted(whole[e["event_id"]].items()))
                      for e in later if e["event_type"] == "impression")
    cold = reference_features(later)
    assert any(sorted(cold[k].items()) != f for k, f in expected), "the history must matter"

    with TestPipeline(options=pipeline_options(["--streaming"])) as p:
        resumed = (p | _stream(later) | AddEntityFeatures(store=store)
                   | beam.Filter(lambda r: r.fields["event_type"] == "impression")
                   | beam.Map(lambda r: (r.event_id, sorted(r.fields["features"].items()))))
        assert_that(resumed, equal_to(expected))


@pytest.mark.kafka
def test_a_kafka_stream_from_the_cutoff_resumes_from_the_snapshot(kafka_bootstrap, tmp_path):
    """The whole history is on a topic; the job starts its group at the cut-off's offsets."""
    events, _, cutoff, path = _history(tmp_path)
    store = str(tmp_path / "features.sqlite")
    backfill.run(["--events", path, "--cutoff", str(cutoff), "--store", store, "--output", str(tmp_path / "out")])
    topic = f"history-{uuid.uuid4().hex[:8]}"
    ensure_topic(kafka_bootstrap, topic, 3)
    produce(sorted(events, key=lambda e: e["event_time"]), kafka_bootstrap, topic, "interaction", "user_id")

    whole = reference_features(events)
    expected = sorted((e["event_id"], sorted(whole[e["event_id"]].items()))
                      for e in events if e["event_type"] == "impression" and e["event_time"] >= cutoff)
    with TestPipeline(options=pipeline_options(["--streaming"])) as p:
        rows = (p | ReadFromKafka(kafka_bootstrap, [topic], "g", stop_at_end=True, start_time_ms=cutoff)
                | DecodeAvro("interaction")).rows
        resumed = (rows | AddEntityFeatures(store=store)
                   | beam.Filter(lambda r: r.fields["event_type"] == "impression")
                   | beam.Map(lambda r: (r.event_id, sorted(r.fields["features"].items()))))
        assert_that(resumed, equal_to(expected))
        assert_that(rows | beam.Map(lambda r: r.event_time >= cutoff) | beam.combiners.Count.PerElement(),
                    equal_to([(True, sum(e["event_time"] >= cutoff for e in events))]), label="FromCutoff")


def test_backfill_refuses_to_overwrite_a_store_and_bad_cutoffs(tmp_path, capsys):
    events, _, cutoff, path = _history(tmp_path)
    store = tmp_path / "features.sqlite"
    store.write_bytes(b"")
    with pytest.raises(SystemExit):
        backfill.parse_args(["--events", path, "--cutoff", str(cutoff), "--store", str(store)])
    assert "exists" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        backfill.parse_args(["--events", path, "--cutoff", "yesterday-ish", "--store", str(tmp_path / "new")])
    assert "unparseable event time" in capsys.readouterr().err
    args, _ = backfill.parse_args(["--events", path, "--cutoff", "1970-01-01T00:00:02Z",
                                   "--store", str(tmp_path / "new")])
    assert args.cutoff == 2000


def test_stores_other_than_sqlite_are_an_interface_to_implement(tmp_path):
    with pytest.raises(ValueError, match="implement stores.snapshots.Snapshots"):
        snapshots.open_store("postgresql://localhost/features")
    store = snapshots.open_store(f"sqlite:///{tmp_path}/s.sqlite")  # absolute: four slashes in all
    store.save("user:u1", b"{}", (1, "e1"), [], keep_after_ms=0)
    store.close()
    assert snapshots.SnapshotStore(str(tmp_path / "s.sqlite")).load("user:u1") == (b"{}", (1, "e1"))
