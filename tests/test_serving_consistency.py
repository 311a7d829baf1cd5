"""Training/serving consistency: for 1,000 served requests, the features the server computed
(and logged with each impression) equal the pipeline's point-in-time features of that
impression, computed here from the raw history by a plain loop, not from the online store."""
import random
import time

import fastavro
import pytest
import requests

from core.features import PROFILES
from core.interactions import invalid_reason
from pipelines import recommend
from simulator.stream import SimulatorConfig, generate, write_avro
from tests.servers import serving


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """The main job over a history that ends about now (1,500 impressions over the last ~15
    minutes), so that the profiles' counters still count when the server decays them."""
    out = tmp_path_factory.mktemp("published")
    start = int(time.time() * 1000) - 16 * 60_000
    write_avro(generate(SimulatorConfig(impressions=1500, seed=5, start_ms=start)), str(out / "events.avro"))
    recommend.run(["--events", str(out / "events.avro"), "--output", str(out)])
    return out


def _profiles_from_history(path) -> tuple[dict, dict]:
    """Every profile as the feature stages leave it after the history: the valid events applied
    one by one in (event time, event id) order, by a plain loop. Also each profile's clock."""
    events = [r for r in fastavro.reader(open(path, "rb")) if invalid_reason(r) is None]
    profiles, clocks = {kind: {} for kind in PROFILES}, {kind: {} for kind in PROFILES}
    for event in sorted(events, key=lambda e: (e["event_time"], e["event_id"])):
        for kind, (profile_type, field) in PROFILES.items():
            profiles[kind].setdefault(event[field], profile_type()).apply(event)
            clocks[kind][event[field]] = event["event_time"]
    return profiles, clocks


def test_served_features_equal_the_pipelines_point_in_time_features(published, tmp_path):
    profiles, clocks = _profiles_from_history(published / "events.avro")
    rng = random.Random(11)
    users, items = sorted(profiles["user"]) + ["new-user"], sorted(profiles["item"]) + ["new-item"]
    genres = ["drama", "comedy", "action", "sci-fi"]
    log = tmp_path / "served.avro"
    answers = []
    with serving(published, "--event_log", str(log)) as url, requests.Session() as session:
        for _ in range(1000):
            body = {"user_id": rng.choice(users), "item_id": rng.choice(items),
                    "item_genres": rng.sample(genres, rng.randrange(3)), "position": rng.randrange(10)}
            answer = session.post(f"{url}/predict", json=body, timeout=5)
            assert answer.status_code == 200, answer.text
            answers.append((body, answer.json()))
    logged = {r["event_id"]: r for r in fastavro.reader(open(log, "rb"))}
    assert len(logged) == 1000
    for body, answer in answers:
        record = logged[answer["request_id"]]
        expected = {}
        for kind, (profile_type, field) in PROFILES.items():
            profile = profiles[kind].get(body[field]) or profile_type()
            expected.update(profile.features(answer["served_at_ms"], body["item_genres"]))
            # ... at the same profile clock: the server's profile is the history's last event.
            assert answer["profile_clock_ms"][kind] == clocks[kind].get(body[field])
        assert record["event_time"] == answer["served_at_ms"]
        assert record["served_features"] == expected  # exactly: the same arithmetic, the same order
    # Recent profiles: the features differ from user to user (not all a new user's).
    assert len({logged[a["request_id"]]["served_features"]["u_imp_1h"] for _, a in answers}) > 100
