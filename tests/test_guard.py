"""The learner's guard (`monitoring.guard`): quarantine, budgets, known-good versions, rollback;
on the simulator's attacks, through the real learner and a real registry."""
import dataclasses
import json
import random

import pytest

from core.interactions import impression_features
from core.learning import ALERT, DEAD_LETTER, Learner
from core.lifecycle import CANDIDATE, KNOWN_GOOD
from core.publishing import Publisher
from core.records import Example
from models import serde
from monitoring.guard import Guard, state
from simulator.stream import Attack, SimulatorConfig, generate, generate_with_truth
from simulator.world import World
from stores.registry import open_registry

MODEL = "models.zoo:recommender?hash_size=4096"
GUARD = Guard(pin_every=2_000, probation=2_000)


def _examples(config: SimulatorConfig) -> list[Example]:
    """Each impression with its label (a click or watch of it), learned at once, in event order."""
    records = list(generate(config))
    clicked = {r["impression_id"] for r in records if r["event_type"] in ("click", "watch")}
    return sorted((Example(r["event_id"], r["event_time"], impression_features(r), r["event_id"] in clicked,
                           "recommender") for r in records if r["event_type"] == "impression" and r["event_time"] >= 0
                   and r["user_id"] and r["item_id"] and r["position"] is not None and 0 <= r["position"] < 10),
                  key=Example.order)


def _learn(examples, tmp_path, guard=GUARD):
    """The model after learning `examples` in blocks (as a learner applies them), and what left:
    dead letters, predictions, alerts."""
    keys = serde.keyring("g" * 32)
    learner = Learner(MODEL, keys, publisher=Publisher(str(tmp_path / "registry.sqlite"), keys=keys, every_s=None,
                                                       every_events=10 ** 9), guard=guard)
    learner.open()
    model, step = learner.resume("recommender", None)
    out, made = [], []
    for i in range(0, len(examples), 500):
        o, m, _, last, step = learner.apply("recommender", examples[i:i + 500], model, step, None)
        out += o
        made += m
    learner.publish("recommender", model, step, last, final=True)
    learner.close()
    return (model, [record for kind, record in out if kind == DEAD_LETTER], made,
            [record for kind, record in out if kind == ALERT])


def _attack(kind="flip", **extra):
    """The config, and its attackers with how many impressions each answered falsely."""
    config = SimulatorConfig(**{"seed": 5, "users": 200, "impressions": 20_000, "attack_users": 0.02,
                                "attack_kind": kind, **extra})
    world = World(config, random.Random(f"{config.seed}:world"))
    attackers = dict.fromkeys(Attack(config, world).user_ids, 0)
    for record, truth in generate_with_truth(config):
        if truth.poisoned and record["event_type"] == "impression" and record["user_id"]:
            attackers[record["user_id"]] += 1
    return config, attackers


@pytest.mark.parametrize("kind", ["flip", "fake_clicks"])
def test_attackers_are_quarantined_their_labels_kept_and_the_model_rolled_back(kind, tmp_path):
    config, attackers = _attack(kind)
    examples = _examples(config)
    model, dead, made, alerts = _learn(examples, tmp_path)

    quarantined = {d.reason.split("source ", 1)[1] for d in dead if d.reason.startswith("quarantined")}
    # Every attacker that sent 30 false labels or more, and no honest user (one sent 10: not caught).
    assert {user for user, n in attackers.items() if n >= 30} <= quarantined <= set(attackers)
    # Every label refused is a dead letter with its bytes: from each attacker's quarantine on,
    # all its labels, none learned.
    s = state(model)
    for user in quarantined:
        caught = s.quarantined[user]
        theirs = [e for e in examples if e.x["user_id"] == user and e.event_time >= caught.event_time]
        kept = [json.loads(d.payload) for d in dead if d.reason == f"quarantined: source {user}"]
        assert [k["event_id"] for k in kept] == [e.event_id for e in theirs]
        assert all(k["y"] == e.y for k, e in zip(kept, theirs))
    assert len(made) == len(examples)  # every impression still predicted (served)

    rollbacks = [a for a in s.history if a.kind == "rollback"]
    assert rollbacks and all(a.to_step < a.step for a in rollbacks)
    registry = open_registry(str(tmp_path / "registry.sqlite"))
    versions = registry.versions("recommender")
    numbers = [v.version for v in versions]
    assert numbers == sorted(numbers)
    published = [v for v in versions if "rollback_to" in v.metrics]
    assert published, "a rollback publishes the known-good state as a new version"
    for v in published:  # the rolled-back version is the known-good one's model, under a newer number
        assert v.version > v.metrics["rollback_to"]
        assert serde.loads(registry.blob("recommender", v.version), serde.keyring("g" * 32)).__dict__.keys() == \
            serde.loads(registry.blob("recommender", v.metrics["rollback_to"]), serde.keyring("g" * 32)).__dict__.keys()
    # One alert per incident: a quarantine and the rollback it made are one, with the version it
    # published; a quarantine that needed no rollback is one. No retrain: the model was not at fault.
    assert [a.kind for a in alerts if a.signal == "alert"].count("poisoning") == len(rollbacks)
    assert {a.version for a in alerts if a.kind == "poisoning"} == {v.version for v in published}
    assert len([a for a in alerts if a.kind in ("poisoning", "quarantine")]) == len(quarantined)
    assert not [a for a in alerts if a.signal == "retrain" and a.kind != "drift"]
    pins = {v.version: v.pinned for v in versions if v.pinned}
    assert list(pins.values()).count(KNOWN_GOOD) == 1 and set(pins.values()) <= {KNOWN_GOOD, CANDIDATE}
    assert s.known_good.version in pins and pins[s.known_good.version] == KNOWN_GOOD
    latest = registry.latest("recommender")
    assert latest.metrics["guard"]["quarantined"] == len(quarantined)
    # Published versions leave the guard's state (copies, labels kept) out: servers load the model only.
    for v in versions:
        assert not hasattr(serde.loads(registry.blob("recommender", v.version), serde.keyring("g" * 32)),
                           "_streamml_guard")
    registry.close()


def test_no_one_is_quarantined_and_nothing_rolled_back_on_a_clean_stream_that_drifts(tmp_path):
    """The simulator's taste drift (every user's tastes rotate halfway) is genuine: the live model
    adapts to it, the known-good one does not; no alarm, no rollback."""
    config, _ = _attack(attack_users=0.0)
    model, dead, _, alerts = _learn(_examples(config), tmp_path)
    assert not dead and not [a for a in alerts if a.kind != "drift"]
    s = state(model)
    assert s.known_good is not None and not s.quarantined
    assert {a.kind for a in s.history} <= {"known_good", "drift"}  # no quarantine, no rollback
    drift_at = _examples(config)[10_000].event_time  # halfway
    assert all(a.kind == "drift" and a.event_time > drift_at for a in alerts)


def test_a_damaged_model_is_rolled_back_by_the_quality_guardrail(tmp_path):
    """The live model's weights corrupted (not by any one source): its log loss exceeds the
    known-good version's on honest labels, and the guard rolls it back."""
    config, _ = _attack(attack_users=0.0, drift_at=1.0)
    examples = _examples(config)
    keys = serde.keyring("g" * 32)
    learner = Learner(MODEL, keys, guard=GUARD)
    learner.open()
    model, step = learner.resume("recommender", None)
    _, _, _, _, step = learner.apply("recommender", examples[:8_000], model, step, None)
    assert state(model).known_good is not None
    weights = model["LogisticRegression"]._weights
    for k in list(weights)[::2]:
        weights[k] += 3.0  # damage
    out, _, _, _, step = learner.apply("recommender", examples[8_000:12_000], model, step, None)
    rollbacks = [a for a in state(model).history if a.kind == "rollback"]
    assert len(rollbacks) == 1 and rollbacks[0].detail.startswith("quality")
    assert rollbacks[0].step - 8_000 < 2_000  # within 2,000 labels
    # One alert, and a signal to retrain: the model decayed, whatever the cause.
    alerts = [(a.signal, a.kind) for kind, a in out if kind == ALERT and a.kind != "drift"]
    assert alerts == [("alert", "quality"), ("retrain", "quality")]


def test_a_surge_of_clicks_from_everyone_is_a_drift_not_an_attack(tmp_path):
    """Every user clicks far more from some point on (a genuine change, e.g. a holiday): nobody is
    quarantined, nothing is rolled back; the drift is one incident, one alert and one retrain
    signal, not one per label or per interval."""
    config, _ = _attack(attack_users=0.0, drift_at=1.0)
    rng = random.Random(1)
    examples = [e if i < 12_000 else dataclasses.replace(e, y=e.y or rng.random() < 0.25)
                for i, e in enumerate(_examples(config))]
    model, dead, _, alerts = _learn(examples, tmp_path)
    assert len({d.reason for d in dead}) <= 2  # at most 1% of the 200 users
    assert not [a for a in state(model).history if a.kind == "rollback"]
    drift = [(a.signal, a.kind) for a in alerts if a.kind == "drift"]
    assert drift == [("alert", "drift"), ("retrain", "drift")]
    assert min(a.event_time for a in alerts) > examples[12_000].event_time


def test_a_learning_budget_caps_what_one_user_teaches_per_hour(tmp_path):
    config, _ = _attack(attack_users=0.0)
    examples = _examples(config)
    guard = Guard(pin_every=2_000, probation=2_000, budget_per_hour=20)
    model, dead, _, _ = _learn(examples, tmp_path, guard)
    over = [d for d in dead if d.reason.startswith("over budget")]
    assert over
    learned_per_user_hour = {}
    refused = {json.loads(d.payload)["event_id"] for d in over}
    for e in examples:
        if e.event_id not in refused:
            bucket = (e.x["user_id"], e.event_time // 3_600_000)
            learned_per_user_hour[bucket] = learned_per_user_hour.get(bucket, 0) + 1
    # A token bucket: at most its burst (20) plus what refills within the clock hour (20).
    assert max(learned_per_user_hour.values()) <= 40
    assert len(over) + sum(learned_per_user_hour.values()) == len(examples) - len(
        [d for d in dead if not d.reason.startswith("over budget")])


def test_a_guard_needs_sane_settings():
    with pytest.raises(ValueError, match="odds must be > 1"):
        Guard(odds=1.0)
    with pytest.raises(ValueError, match="budget_per_hour must be > 0"):
        Guard(budget_per_hour=0)
    with pytest.raises(ValueError, match="mini_batch=0"):
        Learner(MODEL, serde.keyring("g" * 32), mini_batch=8, guard=GUARD)


def test_the_guard_decides_alike_in_any_blocks_and_through_saved_state(tmp_path):
    """Batch applies big blocks, streaming a tick at a time, and may resume the model from its
    saved bytes between firings: the guard's state travels with the model, so every prediction,
    refusal and rollback is the same."""
    config, _ = _attack()
    examples = _examples(config)
    keys = serde.keyring("g" * 32)

    def run(block, resave):
        learner = Learner(MODEL, keys, guard=GUARD)
        learner.open()
        model, step, clock, results = *learner.resume("recommender", None), None, []
        for i in range(0, len(examples), block):
            out, made, _, clock, step = learner.apply("recommender", examples[i:i + block], model, step, clock)
            results += [repr(r) for _, r in out] + [(p.event_id, p.y_proba) for p in made]
            if resave:  # as a streaming firing that finds no live copy: from the saved bytes
                model, step = learner.resume("recommender", learner.save("recommender", model, step, clock, made, []))
        return sorted(results, key=repr), [(a.kind, a.step, a.detail) for a in state(model).history]

    one_pass = run(len(examples), False)
    assert any(kind == "rollback" for kind, _, _ in one_pass[1])
    assert run(97, True) == one_pass


def test_the_guarded_job_quarantines_the_attackers_and_says_so(tmp_path, capsys):
    """`pipelines.recommend --guard` on the simulated attack: the attackers' labels are dead
    letters, not learned; the registry holds the known-good pin and the rollback; the console
    says it in a line. (Streaming decides alike: the guard's state is the model's, see above.)"""
    from pipelines import recommend
    from pipelines.console import Console

    out = tmp_path / "guarded"
    summary = recommend.run(["--output", str(out), "--users", "200", "--impressions", "12000", "--seed", "5",
                             "--attack_users", "0.02", "--guard", "--guard_pin_every", "2000",
                             "--no_baselines"], console=Console(enabled=True))
    config = SimulatorConfig(seed=5, users=200, impressions=12_000, attack_users=0.02)
    world = World(config, random.Random("5:world"))
    attackers = set(Attack(config, world).user_ids)
    dead = [json.loads(line) for line in (out / "dead_letters.jsonl").read_text().splitlines()]
    quarantined = [d for d in dead if d["reason"].startswith("quarantined: source ")]
    sources = {d["reason"].split("source ", 1)[1] for d in quarantined}
    assert sources and sources <= attackers
    assert summary["counts"]["guard.quarantined_sources"] == len(sources)
    assert summary["counts"]["guard.quarantined_labels"] == len(quarantined)
    assert all(json.loads(__import__("base64").b64decode(d["payload"]))["x"]["user_id"] in sources
               for d in quarantined)
    registry = open_registry(str(out / "registry.sqlite"))
    versions = registry.versions("recommender")
    assert any(v.pinned == KNOWN_GOOD for v in versions) and any("rollback_to" in v.metrics for v in versions)
    registry.close()
    # One alert per incident, in alerts.jsonl (on Kafka: PREFIX.alerts), counted in the summary.
    alerts = [json.loads(line) for line in (out / "alerts.jsonl").read_text().splitlines()]
    incidents = [a for a in alerts if a["kind"] in ("poisoning", "quarantine")]
    assert len(incidents) == len(sources) and all(a["signal"] == "alert" for a in incidents)
    assert summary["counts"].get("guard.alert.poisoning", 0) == sum(a["kind"] == "poisoning" for a in alerts) > 0
    said = capsys.readouterr().err
    assert f"guard of recommender: {len(sources)} users quarantined" in said
