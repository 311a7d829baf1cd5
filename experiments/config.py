"""Experiments as config: a JSON or YAML file, validated with every error at once.

    name: ranker-ab                 # letters, digits, - and _; names the experiment's records
    kind: ab                        # ab | canary | shadow | bandit
    salt: ranker-ab-1               # of the user buckets (default: the name); a new salt reshuffles users
    control: champion               # ab, canary, shadow: the variant served by default
    variants:                       # name -> the model key that serves it (its registered versions)
      champion: {model: recommender}
      challenger: {model: challenger, factory: "models.zoo:recommender"}  # learned online from scratch
    weights: {champion: 0.5, challenger: 0.5}       # ab: shares of users
    plan: {base_ctr: 0.05, relative_lift: 0.10}     # ab: the smallest lift worth finding (and power,
                                                    #   alpha, budget, burn_in, min_users)
    ramp: [{weight: 0.01, users: 60000, margin: 0.5}, ...]  # canary (default: experiments.canary's)
    guardrails: {p99_latency_ms: 50, max_error_rate: 0.01, min_users: 100, tau2: 0.005}
                                    # canary: besides log loss, always checked: p99 bound of its answers,
                                    #   bound of its error rate (default 1%), canary users before the
                                    #   log loss speaks, mixing variance of its relative difference
    floor: 0.01                     # bandit: each variant's least probability

A variant with a `factory` is a model the learning plane learns online from the labels of what
it served (`pipelines.recommend --experiment FILE` adds its model key); one without is a model
key the learning plane already publishes.

>>> e = parse({"name": "t", "kind": "ab", "control": "a", "variants": {"a": {"model": "recommender"},
...            "b": {"model": "b", "factory": "models.zoo:recommender"}}, "weights": {"a": 0.5, "b": 0.5}})
>>> e.salt, e.model_keys(), e.learned_online()
('t', ['recommender', 'b'], {'b': 'models.zoo:recommender'})
>>> try:
...     parse({"name": "t", "kind": "split"})
... except ConfigError as e:
...     print(e)
experiment t: kind: 'split' is not one of ab, canary, shadow, bandit; variants: missing
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import re

from experiments.canary import DEFAULT_STAGES, Ramp, Stage

KINDS = ("ab", "canary", "shadow", "bandit")
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
GUARDRAILS = ("p99_latency_ms", "max_error_rate", "min_users", "tau2")
_PLAN = {"base_ctr": 0.05, "relative_lift": 0.10, "power": 0.8, "alpha": 0.05, "budget": 2.0, "burn_in": 0.0,
         "min_users": 1000}


class ConfigError(ValueError):
    """An experiment file that cannot be run, with every reason."""


@dataclasses.dataclass(frozen=True)
class Variant:
    model: str  # the model key whose newest verified version serves the variant
    factory: str | None = None  # MODULE:FUNCTION when the learning plane learns it online


@dataclasses.dataclass(frozen=True)
class Experiment:
    name: str
    kind: str
    salt: str
    variants: dict[str, Variant]
    control: str | None = None
    weights: dict[str, float] | None = None
    plan: dict[str, float] = dataclasses.field(default_factory=lambda: dict(_PLAN))
    ramp: Ramp = Ramp()
    guardrails: dict = dataclasses.field(default_factory=dict)
    floor: float = 0.01

    def model_keys(self) -> list[str]:
        return [v.model for v in self.variants.values()]

    def learned_online(self) -> dict[str, str]:
        """Model key -> factory, of the variants the learning plane learns online."""
        return {v.model: v.factory for v in self.variants.values() if v.factory}

    def treatment(self) -> str | None:
        """The one variant that is not control (canary, shadow)."""
        others = [name for name in self.variants if name != self.control]
        return others[0] if len(others) == 1 else None


def load(path: str) -> Experiment:
    text = pathlib.Path(path).read_text()
    try:
        if path.endswith((".yaml", ".yml")):
            import yaml  # the serving extra's; JSON needs nothing
            spec = yaml.safe_load(text)
        else:
            spec = json.loads(text)
    except ImportError:
        raise ConfigError(f"{path}: YAML needs PyYAML (pip install '.[serving]'), or write the file as JSON")
    except ValueError as e:  # JSON's and YAML's syntax errors both say where
        raise ConfigError(f"{path}: not valid {'YAML' if path.endswith(('yaml', 'yml')) else 'JSON'}: {e}")
    try:
        return parse(spec)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


class Watched:
    """An experiment file watched for changes (its modification time): `changed()` is the
    experiment when the file changed since the last call, else None; a changed file that does
    not load raises ConfigError (or OSError), and is not read again until it changes again."""

    def __init__(self, path: str):
        self.path, self._mtime = path, os.stat(path).st_mtime_ns

    def changed(self) -> Experiment | None:
        mtime = os.stat(self.path).st_mtime_ns
        if mtime == self._mtime:
            return None
        self._mtime = mtime
        return load(self.path)


def argument(path: str) -> Experiment:
    """argparse's `type=` for an experiment file: the experiment, or the reasons as a usage error."""
    try:
        return load(path)
    except (OSError, ConfigError) as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def path_argument(path: str) -> str:
    """argparse's `type=` for an experiment file another process loads: its absolute path, once
    it loads here."""
    argument(path)
    return os.path.abspath(path)


def parse(spec) -> Experiment:
    if not isinstance(spec, dict):
        raise ConfigError(f"an experiment is a mapping of keys to values, got {type(spec).__name__}")
    errors: list[str] = []
    name, kind = spec.get("name"), spec.get("kind")
    if not (isinstance(name, str) and _NAME.match(name)):
        errors.append(f"name: {name!r} must be 1-64 letters, digits, - or _")
    if kind not in KINDS:
        errors.append(f"kind: {kind!r} is not one of {', '.join(KINDS)}")
    variants = _variants(spec.get("variants"), errors)
    control = spec.get("control")
    if kind in ("ab", "canary", "shadow") and variants and control not in variants:
        errors.append(f"control: {control!r} is not a variant ({', '.join(variants)})")
    if kind in ("canary", "shadow") and variants and len(variants) != 2:
        errors.append(f"variants: a {kind} has two (control and one other), got {len(variants)}")
    weights = spec.get("weights")
    if kind == "ab":
        weights = _weights(weights, variants, errors)
    elif weights is not None:
        errors.append(f"weights: only an ab experiment has fixed weights (a {kind} sets its own)")
    plan = {**_PLAN, **_numbers(spec.get("plan", {}), "plan", _PLAN, errors)}
    ramp = _ramp(spec.get("ramp"), errors)
    guardrails = spec.get("guardrails") or {}
    if not (isinstance(guardrails, dict) and set(guardrails) <= set(GUARDRAILS)
            and all(isinstance(v, (int, float)) and v > 0 for v in guardrails.values())
            and guardrails.get("max_error_rate", 0) < 1):
        errors.append(f"guardrails: positive numbers for {', '.join(GUARDRAILS)} (max_error_rate below 1); "
                      f"got {guardrails!r}")
    floor = spec.get("floor", 0.01)
    if not (isinstance(floor, (int, float)) and 0 <= floor * max(len(variants), 1) < 1):
        errors.append(f"floor: {floor!r} must be in [0, 1 / variants)")
    unknown = set(spec) - {"name", "kind", "salt", "control", "variants", "weights", "plan", "ramp",
                           "guardrails", "floor"}
    if unknown:
        errors.append(f"unknown keys: {', '.join(sorted(unknown))}")
    if errors:
        raise ConfigError(f"experiment {name}: " + "; ".join(errors))
    return Experiment(name, kind, str(spec.get("salt") or name), variants, control, weights, plan, ramp,
                      dict(guardrails), float(floor))


def _variants(raw, errors) -> dict[str, Variant]:
    if not raw:
        errors.append("variants: missing")
        return {}
    if not isinstance(raw, dict):
        errors.append("variants: a mapping of name -> {model, factory}")
        return {}
    variants = {}
    for name, v in raw.items():
        if not (isinstance(v, dict) and isinstance(v.get("model"), str) and set(v) <= {"model", "factory"}):
            errors.append(f"variants.{name}: {{model: KEY}} or {{model: KEY, factory: MODULE:FUNCTION}}, got {v!r}")
        elif v.get("factory") is not None and ":" not in str(v["factory"]):
            errors.append(f"variants.{name}.factory: {v['factory']!r} is not MODULE:FUNCTION")
        else:
            variants[str(name)] = Variant(v["model"], v.get("factory"))
    keys = [v.model for v in variants.values()]
    if len(set(keys)) != len(keys):
        errors.append(f"variants: two variants serve the same model key ({', '.join(keys)})")
    return variants


def _weights(raw, variants, errors) -> dict[str, float] | None:
    if not isinstance(raw, dict) or set(raw) != set(variants):
        errors.append(f"weights: one per variant ({', '.join(variants)}), got {raw!r}")
        return None
    if not all(isinstance(w, (int, float)) and 0 < w < 1 for w in raw.values()) or abs(sum(raw.values()) - 1) > 1e-9:
        errors.append(f"weights: fractions in (0, 1) that sum to 1, got {raw!r}")
        return None
    return {name: float(raw[name]) for name in variants}  # in the variants' order: the buckets' order


def _numbers(raw, where, allowed, errors) -> dict:
    if not isinstance(raw, dict):
        errors.append(f"{where}: a mapping, got {raw!r}")
        return {}
    bad = {k: v for k, v in raw.items() if k not in allowed or not isinstance(v, (int, float))}
    if bad:
        errors.append(f"{where}: numbers for {', '.join(allowed)}; got {bad!r}")
    return {k: float(v) for k, v in raw.items() if k not in bad}


def _ramp(raw, errors) -> Ramp:
    if raw is None:
        return Ramp(DEFAULT_STAGES)
    try:
        return Ramp(tuple(Stage(float(s["weight"]), int(s["users"]), float(s["margin"])) for s in raw))
    except (TypeError, KeyError, ValueError) as e:
        errors.append(f"ramp: a list of {{weight, users, margin}} with increasing weights in (0, 1): {e}")
        return Ramp(DEFAULT_STAGES)
