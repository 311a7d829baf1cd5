"""Rollback to a retained version (`pipelines.rollback`): one command; a server under load switches
with no failed request; a running learner adopts it and learns on from it."""
import json
import shutil
import subprocess
import sys
import textwrap
import threading

import pytest

from core.learning import Learner
from core.publishing import Publisher, load_version
from models import serde
from pipelines import recommend, rollback
from pipelines.console import UserError
from stores.registry import open_registry
from tests.servers import serving, wait
from tests.test_guard import MODEL, _attack, _examples

REQUEST = {"user_id": "u1", "item_id": "i1", "item_genres": ["drama"], "position": 2, "device": "tv"}
LOAD = textwrap.dedent("""
    import json, sys, time, requests
    url, request, until = sys.argv[1], json.loads(sys.argv[2]), time.time() + float(sys.argv[3])
    with requests.Session() as session:
        while time.time() < until:
            answer = session.post(url + "/predict", json=request, timeout=5)
            print(json.dumps([time.time() * 1000, answer.status_code, answer.json().get("model_version"),
                              answer.json().get("probability")]), flush=True)
""")


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """The main job's models, and a second version of the main one (learned on): v1 and v2."""
    out = tmp_path_factory.mktemp("published")
    recommend.run(["--impressions", "600", "--seed", "3", "--output", str(out), "--no_baselines"])
    registry = open_registry(str(out / "registry.sqlite"))
    keys = serde.store_key(registry.path)
    first = registry.latest("recommender")
    model = load_version(registry, first, keys)
    for _ in range(50):
        model.learn_one({"user_id": "u1", "item_id": "i1", "device": "tv", "position": "2", "hour": "1"}, True)
    registry.publish("recommender", serde.dumps(model, keys), step=first.step + 50, clock_ms=first.clock_ms + 1)
    registry.close()
    return out


def test_a_rollback_under_load_switches_the_server_with_no_failed_request(published):
    registry = open_registry(str(published / "registry.sqlite"))
    first, second = registry.versions("recommender")[-2:]
    with serving(published) as url:
        load = subprocess.Popen([sys.executable, "-c", LOAD, url, json.dumps(REQUEST), "60"], stdout=subprocess.PIPE,
                                text=True)
        answers = []
        reading = threading.Thread(target=_read, args=(load.stdout, answers))
        reading.start()
        wait(lambda: len(answers) > 20, timeout_s=30)
        command = subprocess.run([sys.executable, "-m", "pipelines.rollback", "--registry",
                                  str(published / "registry.sqlite"), "--to", str(first.version),
                                  "--reason", "test"], capture_output=True, text=True, timeout=60)
        rolled = registry.latest("recommender")
        # Until the server has answered 20 times from the rollback (the load then stops).
        wait(lambda: sum(1 for a in answers if a[2] == rolled.version) > 20, timeout_s=30)
        load.terminate()
        load.wait(10)
        reading.join(10)
    assert command.returncode == 0, command.stderr
    assert f"recommender v{rolled.version} = v{first.version} (test)" in command.stderr
    assert rolled.version == second.version + 1 and rolled.metrics["rollback_to"] == first.version
    assert registry.blob("recommender", rolled.version) == registry.blob("recommender", first.version)

    assert len(answers) > 40 and {status for _, status, _, _ in answers} == {200}
    versions = [v for _, _, v, _ in answers]
    assert versions[0] == second.version and versions[-1] == rolled.version and versions == sorted(versions)
    switched_ms = next(t for t, _, v, _ in answers if v == rolled.version) - rolled.published_ms
    print(f"switch: first answer of the rollback {switched_ms:.0f} ms after it was published")
    # The version rolled back to answers: another probability than the version before it.
    before = {p for _, _, v, p in answers if v == second.version}
    after = {p for _, _, v, p in answers if v == rolled.version}
    assert len(after) == 1 and not after & before
    registry.close()


def _read(lines, answers):
    for line in lines:
        if line.endswith("\n"):  # not a line cut by the load's stop
            answers.append(json.loads(line))


def test_the_command_lists_versions_and_refuses_one_not_retained(published, tmp_path, capsys):
    from pipelines.console import Console

    where = str(tmp_path / "registry.sqlite")
    shutil.copy(published / "registry.sqlite", where)
    kept = [str(v.version) for v in open_registry(where).versions("recommender")]
    rollback.run(["--registry", where, "--to", "1", "--reason", "listed"])
    rollback.run(["--registry", where, "--list"], console=Console(enabled=True))
    listed = capsys.readouterr().err.splitlines()
    assert listed[0].split() == ["version", "labels", "published", "pinned", "/", "stage"]
    assert [line.split()[0] for line in listed[1:]] == kept + [str(len(kept) + 1)]
    assert listed[-1].endswith("rollback to v1 (manual: listed)")
    with pytest.raises(UserError, match=r"no version 999 of 'recommender' is retained \(retained: 1, 2"):
        rollback.run(["--registry", where, "--to", "999"])
    with pytest.raises(UserError, match="no registry at --registry"):
        rollback.run(["--registry", str(tmp_path / "nothing.sqlite"), "--list"])


def test_a_running_learner_adopts_a_manual_rollback_and_learns_on_from_it(tmp_path):
    config, _ = _attack(attack_users=0.0)
    examples = _examples(config)[:3_000]
    keys = serde.keyring("r" * 32)
    where = str(tmp_path / "registry.sqlite")
    learner = Learner(MODEL, keys, publisher=Publisher(where, keys=keys, every_s=0.0))
    learner.open()
    model, step = learner.resume("recommender", None)
    clock = None
    for block in (examples[:1_000], examples[1_000:2_000]):
        _, _, _, clock, step = learner.apply("recommender", block, model, step, clock)
        learner.publish("recommender", model, step, clock)
    registry = open_registry(where)
    first = registry.versions("recommender")[0]
    rolled = rollback.roll_back(registry, "recommender", first.version, "test")
    _, made, _, clock, step = learner.apply("recommender", examples[2_000:], model, step, clock)
    # The first prediction after it is the rolled-back model's.
    expected = load_version(registry, first, keys).predict_proba_one(examples[2_000].x)
    assert made[0].y_proba == expected
    learner.publish("recommender", model, step, clock)
    newest = registry.latest("recommender")
    assert newest.version == rolled.version + 1 and newest.step == step
    learner.close()
    registry.close()
