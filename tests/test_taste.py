"""Taste alarms (issue 17, item 6): raised from clicks minutes after the simulator's taste
drift, none without one; applied to the user profiles alike in batch and in streaming."""
import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

import simulator
from core.features import order, reference_features
from core.interactions import invalid_reason
from core.profiles import TASTE_ALARMS, UserProfile
from core.requests import lookup, request_fields
from core.records import Row
from monitoring import taste
from pipelines.options import pipeline_options
from tests.test_features import _rows, _stream
from transforms.features.entity import AddEntityFeatures
from transforms.features.taste import TasteAlarms


def _world(seed=1, impressions=6_000, users=50, drift_at=0.5, **more):
    config = simulator.SimulatorConfig(seed=seed, impressions=impressions, users=users, drift_at=drift_at,
                                       late_fraction=0.0, malformed_fraction=0.0, **more)
    events = [e for e in simulator.generate(config) if invalid_reason(e) is None]
    shown = sorted((e for e in events if e["event_type"] == "impression"), key=lambda e: (e["event_time"], e["event_id"]))
    return events, shown[round(drift_at * impressions)]["event_time"] if drift_at < 1 else None


def _plain_alarms(events) -> list:
    """The alarms by a plain loop: each user's clicks through a TasteProfile, then all in order."""
    by_user = {}
    for e in sorted(events, key=lambda e: (e["event_time"], e["event_id"])):
        if e["event_type"] == "click" and e.get("item_genres"):
            by_user.setdefault(e["user_id"], []).append(Row(e["event_id"], e["event_time"], e))
    signals = [s for rows in by_user.values() for s in taste.signals(taste.TasteProfile(), rows)]
    return [a.event_time for a in taste.raise_alarms(taste.TasteMonitor(), sorted(signals, key=order))]


@pytest.mark.parametrize("seed", [7, 11])
def test_the_alarm_fires_minutes_after_the_taste_drift_and_never_without_one(seed):
    """The main job's world (200 users; tuned on 600): 3.5 and 17 min after the drift."""
    events, drift_ms = _world(seed=seed, impressions=20_000, users=200)
    found = _plain_alarms(events)
    assert len(found) == 1 and 0 < found[0] - drift_ms < 30 * 60_000, (found, drift_ms)
    steady, _ = _world(seed=seed, impressions=20_000, users=200, drift_at=1.0)
    assert _plain_alarms(steady) == []


def test_the_monitor_resumes_from_its_state_exactly():
    events, _ = _world()
    signals = []
    for user in {e["user_id"] for e in events}:
        clicks = sorted((Row(e["event_id"], e["event_time"], e) for e in events
                         if e["user_id"] == user and e["event_type"] == "click"), key=order)
        signals += taste.signals(taste.TasteProfile(), clicks)
    signals.sort(key=order)
    whole, resumed = taste.TasteMonitor(), taste.TasteMonitor()
    for i, row in enumerate(signals):
        whole.update(row.fields["taste_signal"])
        resumed = taste.TasteMonitor(resumed.state())  # what a stage rebuilt from Beam state does
        resumed.update(row.fields["taste_signal"])
    assert whole.alarms and resumed.alarms == whole.alarms and resumed.state() == whole.state()


def test_a_reset_moves_the_genre_features_and_keeps_the_rest():
    events, drift_ms = _world()
    alarms = _plain_alarms(events)
    assert alarms, "this world's drift must raise an alarm"
    plain, reset = reference_features(events), reference_features(events, alarms)
    after = [e["event_id"] for e in events if e["event_type"] == "impression" and e["event_time"] > alarms[0]]
    before = [e["event_id"] for e in events if e["event_type"] == "impression" and e["event_time"] <= alarms[0]]
    assert all(plain[i] == reset[i] for i in before)
    assert all(plain[i][k] == pytest.approx(reset[i][k], rel=1e-9, abs=1e-12)  # decayed in two steps
               for i in after for k in plain[i] if not k.startswith("ug_"))
    moved = sum(plain[i]["ug_clicks_24h"] != reset[i]["ug_clicks_24h"] for i in after)
    assert moved > 0.5 * len(after)
    assert UserProfile(UserProfile().state()[:4]).reset_at is None  # a state from before resets loads


@pytest.mark.parametrize("mode", ["batch", "streaming from state"])
def test_alarms_apply_to_the_user_features_alike_in_batch_and_streaming(mode, monkeypatch):
    from transforms.features.streaming import ProfileShardDoFn
    if mode == "streaming from state":  # every firing rebuilds its shard from Beam state
        monkeypatch.setattr(ProfileShardDoFn, "LIVE_SHARDS", 0)
    events, _ = _world(seed=2, impressions=4_000, users=30, mean_gap_ms=300)  # 20 min: fewer ticks to fire
    alarms = _plain_alarms(events)
    expected = {k: sorted(v.items()) for k, v in reference_features(events, alarms).items()}
    streaming = mode != "batch"
    with TestPipeline(options=pipeline_options(["--streaming"] if streaming else [])) as p:
        rows = p | (_stream(events, step=200) if streaming else beam.Create(_rows(events)))
        found = rows | TasteAlarms()
        featured = (rows | AddEntityFeatures(taste_alarms=found, shards=2)
                    | beam.Filter(lambda r: r.fields["event_type"] == "impression")
                    | beam.Map(lambda r: (r.event_id, sorted(r.fields["features"].items()))))
        assert_that(found | beam.Map(lambda a: a.event_time), equal_to(alarms), label="Alarms")
        assert_that(featured, equal_to(sorted(expected.items())), label="Features")


def test_the_main_job_raises_the_alarm_as_an_alert_and_publishes_reset_profiles(tmp_path):
    import json

    from pipelines import recommend
    from stores.online import open_online_store
    out = tmp_path / "run"
    summary = recommend.run(["--taste_alarm", "reset", "--no_baselines", "--output", str(out)])
    _, drift_ms = _world(seed=7, impressions=20_000, users=200)
    alerts = [json.loads(line) for line in open(out / "alerts.jsonl")]
    assert [(a["model_key"], a["kind"], a["signal"]) for a in alerts] == [("user_features", "drift", "alert")]
    alarm = alerts[0]["event_time"]
    assert 0 < alarm - drift_ms < 30 * 60_000
    assert summary["counts"]["taste.alert.drift"] == 1
    store = open_online_store(str(out / "online.sqlite"))
    try:
        users = list(store.scan("user"))
        assert store.get("user", [TASTE_ALARMS]) == {TASTE_ALARMS: ([alarm], alarm)}
        assert store.count("user") == len(users) == 200
        active_after = [state for _, state, clock in users if clock > alarm]
        assert active_after and all(UserProfile(state).reset_at == alarm for state in active_after)
        idle = [user for user, state, clock in users if clock <= alarm]
        assert idle and all(UserProfile(state).reset_at is None for _, state, clock in users if clock <= alarm)
        # A server asked for an idle user now gets the features the pipeline would give an
        # impression now: the reset applied on the way (training/serving consistency).
        events = [e for e in simulator.generate(simulator.SimulatorConfig(seed=7, impressions=20_000, users=200))
                  if invalid_reason(e) is None]
        now = max(e["event_time"] for e in events) + 1
        request = {"user_id": idle[0], "item_id": events[0]["item_id"], "item_genres": events[0]["item_genres"],
                   "position": 0, "device": "tv"}
        asked = {"event_id": "asked", "event_type": "impression", "event_time": now, **request}
        served = request_fields(request, now, lookup(store, request))["features"]
    finally:
        store.close()
    expected = reference_features(events + [asked], [alarm])["asked"]
    assert served == pytest.approx(expected, rel=1e-9) and served != reference_features(events + [asked])["asked"]
