"""The experiment's owner: from labelled impressions to the routing state the replicas read,
on simulated users whose truth is known; and the owner process on a real Kafka topic."""
import json
import uuid

import numpy as np
import pytest
from confluent_kafka import Producer

from core.kafka import ensure_topic, produce
from experiments import config
from experiments.labels import Labeller
from experiments.owner import Ledger, Owner
from experiments.routing import route
from pipelines import experiment as owner_process
from simulator.world import NOT_SERVED
from stores.experiments import open_experiment_store

VARIANTS = {"control": {"model": "recommender"}, "new": {"model": "challenger"}}
RAMP = [{"weight": 0.1, "users": 1500, "margin": 0.5}, {"weight": 0.3, "users": 1500, "margin": 0.25}]


def _traffic(experiment, owner, ledger, users: int, ctr: dict, calibration: dict, seed: int, check_every=100):
    """`users` new users in turn, each routed by the owner's state now, shown 1-9 impressions
    with the variant's true CTR and served probability `calibration[variant] * CTR`."""
    rng = np.random.default_rng(seed)
    for i in range(users):
        user = f"{seed}-{i}"
        assigned = route(experiment, owner.state, user, f"r{i}")
        for _ in range(rng.integers(1, 10)):
            ledger.add({"user_id": user, "variant": assigned.variant, "bucket": assigned.bucket,
                        "assignment_probability": assigned.probability,
                        "clicked": bool(rng.random() < ctr[assigned.variant]),
                        "served_probability": calibration[assigned.variant] * ctr[assigned.variant]})
        if i % check_every == check_every - 1:
            owner.check(ledger)


@pytest.mark.parametrize("calibration, ending", [(3.0, "aborted"), (1.0, "promoted")])
def test_the_owner_ramps_a_good_canary_and_aborts_a_bad_one(calibration, ending):
    experiment = config.parse({"name": "c", "kind": "canary", "control": "control", "variants": VARIANTS, "ramp": RAMP,
                               "guardrails": {"tau2": 0.01}})
    owner, ledger = Owner(experiment), Ledger()
    _traffic(experiment, owner, ledger, 9000, {"control": 0.1, "new": 0.1}, {"control": 1.0, "new": calibration}, 1)
    state, _ = owner.check(ledger)
    assert state["state"] == ending
    everyone = {route(experiment, state, f"x{i}", "r").variant for i in range(300)}
    assert everyone == ({"control"} if ending == "aborted" else {"new"})
    if ending == "promoted":
        assert [e["event"] for e in owner._canary.events] == ["advanced", "promoted"]


def test_the_owner_aborts_a_slow_canary_on_its_answers_as_served_before_any_label():
    experiment = config.parse({"name": "c", "kind": "canary", "control": "control", "variants": VARIANTS, "ramp": RAMP,
                               "guardrails": {"p99_latency_ms": 50}})
    owner, ledger, rng = Owner(experiment), Ledger(), np.random.default_rng(7)
    for i in range(300):
        variant = "new" if i % 10 == 0 else "control"
        for position in range(3):  # the first impression of a request carries its time to answer
            ledger.served({"user_id": f"u{i}", "variant": variant, "position": position, "error": None,
                           "serve_ms": float(rng.normal(80 if variant == "new" else 5, 5)) if position == 0 else None})
    state, _ = owner.check(ledger)
    assert state["state"] == "ramping"  # 30 canary requests: too few to judge
    for i in range(300, 1300):
        ledger.served({"user_id": f"u{i}", "variant": "new", "error": None, "serve_ms": float(rng.normal(80, 5))})
    state, events = owner.check(ledger)
    assert state["state"] == "aborted" and "p99 latency" in events[0]["reason"]
    assert state["summary"]["new"]["requests"] == 1030 and 70 < state["summary"]["new"]["p99_ms"] < 100
    assert state["summary"]["control"]["requests"] == 270 and state["summary"]["control"]["p99_ms"] < 30


def test_the_owner_ships_a_real_lift_and_routes_everyone_to_it():
    experiment = config.parse({"name": "ab", "kind": "ab", "control": "control", "variants": VARIANTS,
                               "weights": {"control": 0.5, "new": 0.5},
                               "plan": {"base_ctr": 0.05, "relative_lift": 0.3, "min_users": 500}})
    owner, ledger = Owner(experiment), Ledger()
    _traffic(experiment, owner, ledger, 20_000, {"control": 0.05, "new": 0.08}, {"control": 1, "new": 1}, 2)
    state, _ = owner.check(ledger)
    assert state["decision"]["action"] == "ship" and state["decision"]["variant"] == "new"
    assert state["test"]["lift_low"] > 0 and sum(state["test"]["users"].values()) < 20_000
    assert {route(experiment, state, f"x{i}", "r").variant for i in range(300)} == {"new"}


def test_the_owners_bandit_favours_the_best_variant():
    experiment = config.parse({"name": "b", "kind": "bandit", "variants": VARIANTS, "floor": 0.02})
    owner, ledger = Owner(experiment), Ledger()
    _traffic(experiment, owner, ledger, 3000, {"control": 0.05, "new": 0.10}, {"control": 1, "new": 1}, 3)
    state, _ = owner.check(ledger)
    assert state["probabilities"]["new"] > 0.9 and state["probabilities"]["control"] >= 0.02
    estimates = state["off_policy"]  # from the logged probabilities: what each policy would have had
    assert abs(estimates["always new"] - 0.10) < 0.02 and abs(estimates["uniform"] - 0.075) < 0.02


def test_the_owner_compares_a_shadow_pairwise_on_controls_impressions():
    """Control serves calibrated probabilities, the shadow's are three times too high: on the
    same impressions, the shadow's log loss is higher with confidence."""
    experiment = config.parse({"name": "s", "kind": "shadow", "control": "control", "variants": VARIANTS})
    owner, ledger, rng = Owner(experiment), Ledger(), np.random.default_rng(6)
    for i in range(3000):
        clicked = bool(rng.random() < 0.1)
        impression = {"user_id": f"u{i % 600}", "variant": "control", "bucket": 1, "clicked": clicked,
                      "served_probability": 0.1, "item_id": f"i{i % 7}", "propensity": 0.5, "event_id": f"e{i}"}
        ledger.add(impression, {"probability": 0.3, "shadow_item": "i0"})
    state, _ = owner.check(ledger)
    shadow = state["shadow"]
    assert shadow["paired_impressions"] == 3000 and shadow["low"] > 0
    truth = -(0.1 * np.log(0.3) + 0.9 * np.log(0.7)) + (0.1 * np.log(0.1) + 0.9 * np.log(0.9))
    assert shadow["low"] < truth < shadow["high"]
    assert shadow["matches"] == 429 and 0 < shadow["ips_ctr"] < 1  # item i0: every 7th impression


def test_labels_follow_the_attribution_window_and_the_lateness():
    labeller = Labeller(window_ms=1000, lateness_ms=500, experiment="ab")
    base = {"user_id": "u", "experiment": "ab", "variant": "a", "bucket": 1, "served_probability": 0.1}
    assert labeller.add({**base, "event_type": "impression", "event_id": "i1", "event_time": 0}) == []
    assert labeller.add({**base, "event_type": "impression", "event_id": "other", "event_time": 0,
                         "experiment": "another"}) == []  # another experiment's: not ours
    assert labeller.add({"event_type": "click", "event_id": "c", "impression_id": "i1", "event_time": 1200}) == []
    assert labeller.add({"event_type": "skip", "event_id": "s", "impression_id": "i1", "event_time": 1400}) == []
    closed = labeller.add({"event_type": "skip", "event_id": "s2", "impression_id": "x", "event_time": 1500})
    assert [(r["event_id"], r["clicked"]) for r in closed] == [("i1", False)]  # the click came after the window


@pytest.mark.kafka
def test_the_owner_process_decides_from_the_topic_and_writes_state_and_report(kafka_bootstrap, tmp_path):
    spec = tmp_path / "ab.json"
    spec.write_text(json.dumps({"name": "ab", "kind": "ab", "control": "control", "variants": VARIANTS,
                                "weights": {"control": 0.5, "new": 0.5},
                                "plan": {"base_ctr": 0.05, "relative_lift": 0.5, "min_users": 300}}))
    experiment = config.load(str(spec))
    rng, records, t = np.random.default_rng(4), [], 1_767_225_600_000
    for i in range(6000):
        user = f"u{i}"
        assigned = route(experiment, {}, user, f"r{i}")
        for j in range(3):
            t += 100
            impression = {"event_id": f"i{i}-{j}", "event_type": "impression", "event_time": t, "user_id": user,
                          "item_id": "item", "item_genres": [], "impression_id": None, "position": 0, "device": None,
                          "watch_seconds": None, **NOT_SERVED, "model_key": assigned.model_key,
                          "served_probability": 0.05, "experiment": "ab", "variant": assigned.variant,
                          "bucket": assigned.bucket, "assignment_probability": 0.5}
            records.append(impression)
            if rng.random() < (0.05 if assigned.variant == "control" else 0.1):
                records.append({**impression, "event_id": f"c{i}-{j}", "event_type": "click", "event_time": t + 50,
                                "impression_id": impression["event_id"], **NOT_SERVED})
    # A foreign or broken writer: a variant the file does not name, an impression without a bucket.
    records += [{**records[0], "event_id": "bad-1", "variant": "nobody"}, {**records[0], "event_id": "bad-2", "bucket": None}]
    topic = f"owner-{uuid.uuid4().hex[:8]}"
    ensure_topic(kafka_bootstrap, topic, 3)
    produce(records, kafka_bootstrap, topic, "interaction", "user_id")
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    producer.produce(topic, key=b"u1", value=b"\x02not avro", timestamp=t)
    assert producer.flush(10) == 0
    store = tmp_path / "experiments.sqlite"
    assert owner_process.main(["--experiment", str(spec), "--bootstrap", kafka_bootstrap, "--topic", topic,
                               "--store", str(store), "--report", str(tmp_path / "report"), "--attribution_minutes",
                               "0.5", "--allowed_lateness_s", "1", "--check_s", "0.5", "--duration_s", "15"]) == 0
    stored = open_experiment_store(str(store)).get("ab")
    assert stored.state["decision"]["action"] == "ship" and stored.state["decision"]["variant"] == "new"
    labelled = stored.state["summary"]
    assert labelled["control"]["impressions"] + labelled["new"]["impressions"] > 0.9 * 18_000
    assert [e["event"] for _, _, e in open_experiment_store(str(store)).events("ab")] == ["ship"]
    text = (tmp_path / "report" / "report.md").read_text()
    assert "**Decision: ship**" in text and "| new | challenger |" in text and "burn-in" in text
    assert (tmp_path / "report" / "report.png").stat().st_size > 10_000
    assert stored.state["input"] == {"read": len(records) + 1, "undecodable": 1, "unusable": 2}
    assert "1 undecodable, 2 impressions routed by this experiment unusable" in text


@pytest.mark.kafka
def test_an_owner_that_read_nothing_says_so_and_exits_1(kafka_bootstrap, tmp_path, capsys):
    spec = tmp_path / "ab.json"
    spec.write_text(json.dumps({"name": "ab", "kind": "ab", "control": "control", "variants": VARIANTS,
                                "weights": {"control": 0.5, "new": 0.5}}))
    topic = f"empty-{uuid.uuid4().hex[:8]}"
    ensure_topic(kafka_bootstrap, topic, 1)
    assert owner_process.main(["--experiment", str(spec), "--bootstrap", kafka_bootstrap, "--topic", topic,
                               "--store", str(tmp_path / "s.sqlite"), "--report", str(tmp_path / "report"),
                               "--duration_s", "2", "--check_s", "1"]) == 1
    assert f"read nothing from topic {topic!r}" in capsys.readouterr().err


def test_a_finished_canary_is_promoted_in_the_registry(tmp_path):
    from models import serde
    from river import linear_model
    from stores.registry import open_registry
    registry = open_registry(str(tmp_path / "registry.sqlite"))
    published = registry.publish("challenger", serde.dumps(linear_model.LogisticRegression(),
                                                           serde.store_key(registry.path)), step=5, clock_ms=9)
    experiment = config.parse({"name": "c", "kind": "canary", "control": "control", "variants": VARIANTS, "ramp": RAMP})
    owner_process._promote(str(tmp_path / "registry.sqlite"), experiment)
    assert registry.get("challenger", published.version).stage == "production"


def test_the_owner_reloads_a_changed_file_and_refuses_a_new_experiment_in_it(tmp_path):
    import os
    spec, stamp = tmp_path / "c.json", [1_800_000_000_000_000_000]

    def write(**changes):
        spec.write_text(json.dumps({"name": "c", "kind": "canary", "control": "control", "variants": VARIANTS,
                                    "ramp": RAMP, **changes}))
        stamp[0] += 10**9
        os.utime(spec, ns=(stamp[0], stamp[0]))  # a new mtime, whatever the file system's granularity

    write()
    watched, current = owner_process._Watched(str(spec)), config.load(str(spec))
    assert watched.changed(current) is None  # unchanged
    write(guardrails={"max_error_rate": 0.2})
    changed = watched.changed(current)
    owner = owner_process._reloaded(Owner(current, {"stage": 1, "stage_start": 1500, "weight": 0.3}), changed)
    assert owner._canary.errors.max_rate == 0.2 and owner._canary.stage == 1 and owner._canary.weight == 0.3
    write(variants={**VARIANTS, "new": {"model": "another"}})  # a new experiment under the old name
    assert watched.changed(changed) is None
    spec.write_text("{not json")
    os.utime(spec, ns=(stamp[0] + 10**9,) * 2)
    assert watched.changed(changed) is None
