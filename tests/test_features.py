"""Entity features: point in time, identical in batch and streaming, and learned with delay."""
import math
import random

import apache_beam as beam
import hypothesis
import hypothesis.strategies as st
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to

import simulator
from core.features import reference_features
from core.interactions import invalid_reason
from core.records import Row
from models import zoo
from pipelines.options import pipeline_options
from transforms.features.entity import AddEntityFeatures


def _events(n=300, seed=4):
    """Simulated interactions plus a planted leak: every 10th impression gets a click at the
    very millisecond it was shown, and its user and item a burst of clicks right after."""
    config = simulator.SimulatorConfig(impressions=n, seed=seed, users=20, items=15, late_fraction=0.0)
    events = [e for e in simulator.generate(config) if invalid_reason(e) is None]
    planted = []
    for i, e in enumerate(e for e in events if e["event_type"] == "impression"):
        if i % 10 == 0:
            for k, delay in enumerate((0, 1, 1, 2)):
                planted.append({**e, "event_id": f"leak-{i}-{k}", "event_type": "click",
                                "impression_id": e["event_id"], "position": None,
                                "event_time": e["event_time"] + delay})
    return events + planted


def _rows(events):
    return [beam.window.TimestampedValue(Row(e["event_id"], e["event_time"], e), e["event_time"] / 1000)
            for e in events]


def _stream(events, step=40, seed=0):
    """A TestStream in arrival order, shuffled within chunks, the watermark after each chunk."""
    stream = TestStream()
    ordered = sorted(events, key=lambda e: e["event_time"])
    for i in range(0, len(ordered), step):
        chunk = ordered[i:i + step]
        random.Random(seed + i).shuffle(chunk)
        stream = stream.add_elements(_rows(chunk))
        stream = stream.advance_watermark_to(chunk[-1]["event_time"] / 1000)
    return stream.advance_watermark_to_infinity()


def _featured(rows):
    return (rows | AddEntityFeatures()
            | beam.Filter(lambda r: r.fields["event_type"] == "impression")
            | beam.Map(lambda r: (r.event_id, sorted(r.fields["features"].items()))))


def _strictly_before(events):
    """Each impression's features computed from only the events strictly before it."""
    out = {}
    for imp in (e for e in events if e["event_type"] == "impression"):
        history = [e for e in events if e["event_time"] < imp["event_time"]]
        out[imp["event_id"]] = sorted(reference_features(history + [imp])[imp["event_id"]].items())
    return out


@pytest.mark.parametrize("mode", ["batch", "streaming"])
def test_features_use_only_events_strictly_before_the_impression(mode):
    events = _events()
    expected = _strictly_before(events)
    leaked = [k for k, f in expected.items() if dict(f)["u_click_1h"] > 0]
    assert leaked, "the planted clicks must show up in later impressions' features"
    options = pipeline_options(["--streaming"] if mode == "streaming" else [])
    with TestPipeline(options=options) as p:
        source = p | (_stream(events) if mode == "streaming" else beam.Create(_rows(events)))
        assert_that(_featured(source), equal_to(sorted(expected.items())))


def test_reference_features_ignore_the_outcome_they_predict():
    shown = {"event_id": "imp", "event_type": "impression", "event_time": 1_000, "user_id": "u",
             "item_id": "i", "item_genres": ["drama"]}
    click = {**shown, "event_id": "c", "event_type": "click", "impression_id": "imp"}
    features = reference_features([shown, click, {**click, "event_id": "c2", "event_time": 1_001}])["imp"]
    assert features["u_click_24h"] == features["ug_clicks_24h"] == 0.0
    assert features["i_ctr_24h"] == 0.1  # the prior: nothing known about the item yet


def test_default_hash_size_keeps_id_collisions_under_ten_percent():
    config = simulator.SimulatorConfig()  # the simulator's default population
    tokens = [("user_id", f"u{i:05d}") for i in range(config.users)] + \
             [("item_id", f"i{i:05d}") for i in range(config.items)]
    seen = {e["user_id"] for e in simulator.generate(simulator.SimulatorConfig(impressions=2000)) if e["user_id"]}
    assert all(("user_id", u) in tokens for u in seen)  # the ids the simulator really uses
    report = zoo.id_collisions(tokens, 2 ** 16)
    assert report["tokens"] == 2500 and report["collision_rate"] < 0.10, report
    assert zoo.id_collisions(tokens, 2 ** 10)["collision_rate"] > 0.5  # and it measures something


def _impression(event_id, at, user="u", item="i"):
    return {"event_id": event_id, "event_type": "impression", "event_time": at, "user_id": user,
            "item_id": item, "item_genres": ["drama"], "position": 1, "impression_id": None}


def test_a_profile_featurises_a_late_event_from_what_it_knows():
    from core.profiles import UserProfile

    user = UserProfile()
    for at in (10_000, 20_000):
        user.apply(_impression(f"e{at}", at))
    for late in (20_000, 15_000, 5_000):  # at, between and before what the profile applied
        features = user.features(late, ["drama"])
        assert features["u_since_last"] == 0.0  # as if right after the last event
        assert all(math.isfinite(v) for v in features.values()) and features["u_session_frac"] >= 0


def test_a_late_impression_passes_the_streaming_feature_stage_with_features():
    """One impression sent after later events of its user (an offline phone) used to stop the
    whole streaming job (a log of a negative time)."""
    on_time = [_impression(f"e{i}", 60_000 + i * 1_000) for i in range(5)]
    late = _impression("late", 61_500)
    stream = (TestStream().add_elements(_rows(on_time)).advance_watermark_to(120)
              .add_elements(_rows([late])).advance_watermark_to_infinity())
    with TestPipeline(options=pipeline_options(["--streaming"])) as p:
        ids = _featured(p | stream) | beam.Map(lambda kv: kv[0])
        assert_that(ids, equal_to([f"e{i}" for i in range(5)] + ["late"]))


def test_streaming_rows_left_waiting_by_a_firing_meet_later_arrivals():
    """The watermark trails the input (to the middle of each chunk just sent): every firing
    leaves rows waiting (the `left` cell) while more arrive (the `pending` bag), for the same
    keys; features still equal those from only the events strictly before each impression."""
    events = _events(n=200, seed=9)
    expected = _strictly_before(events)
    ordered = sorted(events, key=lambda e: e["event_time"])
    stream = TestStream()
    for i in range(0, len(ordered), 30):
        chunk = ordered[i:i + 30]
        stream = stream.add_elements(_rows(random.Random(i).sample(chunk, len(chunk))))
        stream = stream.advance_watermark_to(chunk[len(chunk) // 2]["event_time"] / 1000)
    with TestPipeline(options=pipeline_options(["--streaming"])) as p:
        featured = _featured(p | stream.advance_watermark_to_infinity())
        assert_that(featured, equal_to(sorted(expected.items())))


@pytest.mark.parametrize("shards", [1, 3, 64])
def test_streaming_features_from_state_alone_equal_those_from_the_worker_cache(monkeypatch, shards):
    """With no live shard kept between calls, every call and firing rebuilds its shard from
    state (what a restarted or another worker does): profiles from the `profiles` cell and the
    `changes` bag, waiting rows from `left` and `pending`, compacted on the way. The features
    are still those of only the events strictly before each impression, whatever the sharding."""
    from transforms.features.streaming import ProfileShardDoFn
    monkeypatch.setattr(ProfileShardDoFn, "LIVE_SHARDS", 0 if shards != 64 else ProfileShardDoFn.LIVE_SHARDS)
    events = _events(n=150, seed=11)
    expected = _strictly_before(events)
    with TestPipeline(options=pipeline_options(["--streaming"])) as p:
        featured = (p | _stream(events, step=25)
                    | AddEntityFeatures(shards=shards)
                    | beam.Filter(lambda r: r.fields["event_type"] == "impression")
                    | beam.Map(lambda r: (r.event_id, sorted(r.fields["features"].items()))))
        assert_that(featured, equal_to(sorted(expected.items())))


def test_the_streaming_feature_stage_appends_arrivals_to_a_bag():
    """An arrival adds one row to state, not the whole waiting list rewritten (quadratic)."""
    from apache_beam.transforms import userstate
    from transforms.features.streaming import ProfileShardDoFn
    assert isinstance(ProfileShardDoFn.PENDING, userstate.BagStateSpec)


@hypothesis.settings(max_examples=200, deadline=None)
@hypothesis.given(events=st.lists(st.tuples(st.integers(0, 7_200_000), st.sampled_from(["impression", "click", "watch", "skip"]),
                                            st.lists(st.sampled_from(["drama", "comedy", "news", "kids"]), max_size=3)),
                                  max_size=30),
                  later=st.integers(0, 200_000_000),
                  genre_sets=st.lists(st.lists(st.sampled_from(["drama", "comedy", "news", "kids", "sport"]), max_size=3),
                                      max_size=6))
def test_the_ranking_shortcuts_give_the_profiles_features_to_the_bit(events, later, genre_sets):
    # A ranking reads an item's four counters alone and a user's genres once per set
    # (`features_and_popularity`, `features_for`): the values of the general path, decaying
    # every counter (`_Decayed.at`) for every candidate.
    from core.profiles import ItemProfile, UserProfile, _ctr

    user, item, t = UserProfile(), ItemProfile(), 0
    for gap, kind, genres in events:
        t += gap
        event = {"event_type": kind, "event_time": t, "item_genres": genres}
        user.apply(event)
        item.apply(event)
    for at in (t, t + later):
        c = item.counters.at(at)
        features, popularity = item.features_and_popularity(at)
        assert popularity == c.get("impression@24h", 0.0) and features == {
            "i_imp_1h": math.log1p(c.get("impression@1h", 0.0)), "i_imp_24h": math.log1p(c.get("impression@24h", 0.0)),
            "i_ctr_24h": _ctr(c.get("click@24h", 0.0), c.get("impression@24h", 0.0))}
        own, per_set = user.features_for(at, genre_sets)
        assert [{**own, **g} for g in per_set] == [user.features(at, genres) for genres in genre_sets]
        decayed = user.counters.at(at)
        for genres in genre_sets:  # sum over the genres' counters, in the genres' order
            clicks = sum(decayed.get(f"g:{g}:click@24h", 0.0) for g in genres)
            assert user.features(at, genres)["ug_clicks_24h"] == math.log1p(clicks)
