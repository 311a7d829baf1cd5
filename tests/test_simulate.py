"""Tests of the interaction-stream simulator (no Beam needed)."""
import collections
import dataclasses
import doctest
import statistics

import fastavro
import fastavro.validation
import pytest

import schemas
import simulator
import simulator.cli
import simulator.world
from simulator import SimulatorConfig, generate, generate_with_truth, write_avro

SMALL = SimulatorConfig(users=60, items=80, impressions=3000)


def _clean(**overrides):
    """A small config without late or malformed records, unless overridden."""
    fields = dict(users=60, items=80, impressions=3000, late_fraction=0.0,
                  malformed_fraction=0.0)
    fields.update(overrides)
    return SimulatorConfig(**fields)


def _by_type(records):
    return collections.Counter(r["event_type"] for r in records)


def test_doctests():
    assert doctest.testmod(simulator.stream).failed == 0


def test_same_seed_gives_identical_records():
    assert list(generate(SMALL)) == list(generate(SMALL))


def test_different_seeds_differ():
    other = dataclasses.replace(SMALL, seed=SMALL.seed + 1)
    assert list(generate(SMALL)) != list(generate(other))


def test_fractions_leave_the_rest_of_the_stream_alone():
    plain = list(generate(_clean()))
    noisy = list(generate(_clean(malformed_fraction=0.05)))
    assert [r["event_id"] for r in plain] == [r["event_id"] for r in noisy]
    late = list(generate(_clean(late_fraction=0.2)))
    assert sorted(r["event_id"] for r in plain) == sorted(r["event_id"] for r in late)


@pytest.mark.parametrize("kind", ["flip", "fake_clicks"])
def test_an_attack_is_its_clean_twin_but_for_the_attackers_outcomes(kind):
    """The poisoning benchmark compares a model with its twin that never saw the attack: both
    streams must be equal record for record (malformed and late ones included) but for what the
    attackers answered."""
    config = SimulatorConfig(seed=3, users=200, impressions=6000, late_fraction=0.05, malformed_fraction=0.02)
    twin = list(generate_with_truth(config))
    attacked = list(generate_with_truth(dataclasses.replace(config, attack_users=0.05, attack_at=0.4,
                                                            attack_kind=kind, attack_rate=0.8)))
    poisoned = [(r, t) for r, t in attacked if t.poisoned]
    attackers = {r["impression_id"] or r["event_id"] for r, _ in poisoned}
    honest = [(r, t) for r, t in attacked if not t.poisoned]
    by_id = {r["event_id"]: (r, t) for r, t in twin}
    assert poisoned and all(by_id[r["event_id"]] == (r, t) for r, t in honest)
    left_out = [r for r, _ in twin if r["event_id"] not in {a["event_id"] for a, _ in attacked}]
    assert all(r["impression_id"] in attackers for r in left_out)  # outcomes an attacker withheld
    users = {r["user_id"] for r, _ in poisoned if r["event_type"] == "impression" and r["user_id"]}
    assert len(users) == 10  # 5% of 200
    shown = [r for r, _ in poisoned if r["event_type"] == "impression"]
    clicks = {r["impression_id"] for r, _ in poisoned if r["event_type"] == "click"}
    if kind == "fake_clicks":
        assert clicks == {r["event_id"] for r in shown}
    else:  # a flip: clicked exactly what the twin's user did not click
        twin_clicks = {r["impression_id"] for r, _ in twin if r["event_type"] == "click"}
        assert clicks == {r["event_id"] for r in shown} - twin_clicks
    assert 0.7 < len(shown) / sum(1 for r, _ in twin if r["event_type"] == "impression" and r["user_id"] in users
                                  and r["event_id"] >= f"imp-{2400:09d}") <= 1.0


def test_records_match_the_schema_and_round_trip(tmp_path):
    schema = schemas.load("interaction")
    config = SimulatorConfig(users=60, items=80, impressions=2000, late_fraction=0.05,
                             malformed_fraction=0.1)
    records = list(generate(config))
    for record in records:
        assert fastavro.validation.validate(record, schema, raise_errors=True)
    path = str(tmp_path / "stream.avro")
    assert write_avro(records, path) == len(records)
    with open(path, "rb") as f:
        assert list(fastavro.reader(f)) == records
    path = str(tmp_path / "plain.avro")
    assert write_avro(iter(records), path, codec="null") == len(records)


def test_impressions_are_in_event_time_order_with_unique_ids():
    records = list(generate(_clean()))
    impressions = [r for r in records if r["event_type"] == "impression"]
    assert len(impressions) == 3000
    times = [r["event_time"] for r in impressions]
    assert times == sorted(times) and times[0] == SMALL.start_ms
    assert len({r["event_id"] for r in records}) == len(records)
    assert {r["position"] for r in impressions} == set(range(10))
    assert {r["device"] for r in impressions} <= set(simulator.world.DEVICES)
    assert all(1 <= len(r["item_genres"]) <= 3 for r in impressions)


def test_click_rate_is_realistic():
    for seed in (1, 2, 3):
        counts = _by_type(generate(_clean(seed=seed)))
        assert 0.05 <= counts["click"] / counts["impression"] <= 0.20
        assert 0 < counts["watch"] <= counts["click"]
        assert counts["skip"] > 0


def test_popular_items_and_active_users_dominate():
    records = [r for r in generate(_clean()) if r["event_type"] == "impression"]
    items = collections.Counter(r["item_id"] for r in records).most_common()
    users = collections.Counter(r["user_id"] for r in records).most_common()
    assert sum(n for _, n in items[:8]) > 0.3 * len(records)  # top 10% of 80 items
    assert users[0][1] > 4 * users[len(users) // 2][1]


def test_outcomes_follow_their_impression_within_the_window():
    config = _clean()
    seen = {}
    clicks = set()
    for record in generate(config):
        if record["event_type"] == "impression":
            seen[record["event_id"]] = record
            continue
        impression = seen[record["impression_id"]]  # an earlier record in the file
        for field in ("user_id", "item_id", "item_genres", "device"):
            assert record[field] == impression[field]
        delay = record["event_time"] - impression["event_time"]
        assert 0 < delay < config.attribution_window_ms
        assert record["position"] is None
        if record["event_type"] == "click":
            clicks.add(record["impression_id"])
        if record["event_type"] == "watch":
            assert record["impression_id"] in clicks and record["watch_seconds"] > 0
        else:
            assert record["watch_seconds"] is None


def test_late_records_arrive_after_later_events():
    config = _clean(late_fraction=0.05, mean_gap_ms=5000.0)  # spans ~4 h, 8 windows
    labelled = list(generate_with_truth(config))
    outcomes = [t for r, t in labelled if r["event_type"] != "impression"]
    late = sum(t.late for t in outcomes)
    assert abs(late - 0.05 * len(outcomes)) < 4 * (0.05 * len(outcomes)) ** 0.5
    latest = None
    overtaken = 0
    for record, truth in labelled:
        t = record["event_time"]
        if truth.late:
            assert record["event_type"] != "impression"
            if latest is not None and latest >= t + config.attribution_window_ms:
                overtaken += 1
        else:  # on-time records arrive in event-time order
            assert latest is None or t >= latest
        latest = t if latest is None else max(latest, t)
    assert overtaken >= 0.8 * late  # all but those at the very end of the stream


def test_malformed_records_are_flagged_and_detectable():
    config = _clean(impressions=4000, malformed_fraction=0.05)
    labelled = list(generate_with_truth(config))
    kinds = collections.Counter(t.malformed for _, t in labelled if t.malformed)
    expected = 0.05 * len(labelled)
    assert abs(sum(kinds.values()) - expected) < 4 * expected ** 0.5
    for record, truth in labelled:
        assert simulator.malformed_kind(record) == truth.malformed
    many = generate_with_truth(_clean(impressions=4000, malformed_fraction=0.5))
    assert {t.malformed for _, t in many} == {None, *simulator.stream.MALFORMED_KINDS}
    assert not any(t.malformed for _, t in generate_with_truth(_clean()))


def _genre_click_rates(config):
    """Click rate per (quarter of the stream, user, genre), for pairs shown >= 15 times."""
    records = list(generate(config))
    clicked = {r["impression_id"] for r in records if r["event_type"] == "click"}
    shown, hits = collections.Counter(), collections.Counter()
    for r in records:
        if r["event_type"] == "impression":
            quarter = int(r["event_id"][4:]) * 4 // config.impressions
            for genre in r["item_genres"]:
                shown[quarter, r["user_id"], genre] += 1
                hits[quarter, r["user_id"], genre] += r["event_id"] in clicked
    return {key: hits[key] / n for key, n in shown.items() if n >= 15}


def _quarter_correlation(rates, a, b):
    """Pearson correlation, over (user, genre), of the click rates in quarters a and b."""
    pairs = [(rates[(a,) + key[1:]], rate) for key, rate in rates.items()
             if key[0] == b and (a,) + key[1:] in rates]
    assert len(pairs) >= 30
    return statistics.correlation(*zip(*pairs))


def test_tastes_drift_halfway():
    """Per-genre click rates of the same users agree within each half, not across the drift."""
    config = _clean(users=20, items=100, impressions=12000, drift_at=0.5)
    rates = _genre_click_rates(config)
    before = _quarter_correlation(rates, 0, 1)
    across = _quarter_correlation(rates, 1, 2)
    after = _quarter_correlation(rates, 2, 3)
    assert before > 0.3 and after > 0.3 and across < min(before, after) - 0.2, (
        before, across, after)

    steady = _genre_click_rates(dataclasses.replace(config, drift_at=1.0))
    assert _quarter_correlation(steady, 1, 2) > 0.5


@pytest.mark.parametrize("bad", [
    dict(users=0), dict(items=-1), dict(impressions=-5), dict(genres=("one",)),
    dict(genres=("a", "a")), dict(mean_gap_ms=0), dict(drift_at=1.5),
    dict(late_fraction=-0.1), dict(malformed_fraction=2), dict(attribution_window_ms=5),
    dict(users=2.5),
])
def test_bad_configs_are_rejected(bad):
    with pytest.raises(ValueError):
        SimulatorConfig(**bad)


def test_generate_rejects_other_configs():
    with pytest.raises(ValueError, match="SimulatorConfig"):
        next(generate({"seed": 1}))


def test_cli_writes_the_file_and_a_summary(tmp_path, capsys):
    path = str(tmp_path / "cli.avro")
    line = simulator.cli.run(["--output", path, "--impressions", "500", "--users", "30",
                         "--items", "40", "--seed", "3", "--late-fraction", "0.1",
                         "--malformed-fraction", "0.02"])
    assert "impression=500" in line and "malformed=" in line and "late=" in line
    assert capsys.readouterr().out.strip() == line
    with open(path, "rb") as f:
        records = list(fastavro.reader(f))
    assert _by_type(records)["impression"] == 500
    assert f"wrote {len(records)} records" in line


def test_cli_help_and_bad_arguments(capsys):
    with pytest.raises(SystemExit) as exit_:
        simulator.cli.run(["--help"])
    assert exit_.value.code == 0 and "--malformed-fraction" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        simulator.cli.run(["--output", "x.avro", "--users", "0"])
    assert exit_.value.code == 2 and "users must be >= 1" in capsys.readouterr().err
