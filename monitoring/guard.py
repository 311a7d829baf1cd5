"""A learner's guard against poisoning: learning budgets, suspicious sources, known-good
versions and rollback.

The learner (`core.learning.Learner`, given a `Guard`) asks it about every label before learning
it. Per source (the feature that names who sent the event, `user_id` by default):

- **Budget**: a source learns at most `budget_per_hour` labels per hour of event time (a token
  bucket, its burst one hour's worth), so no one user moves the model much. A label over budget
  is not learned.
- **Suspicion**: a one-sided Bernoulli CUSUM of the source's labels against the known-good
  model's predictions, for clicks `odds` times likelier than predicted. An honest source drifts
  down (its labels are what the model expects), a source that flips labels or sends fake clicks
  climbs. At `threshold` it is quarantined: its labels are never learned again.
- **Known-good versions**: every `pin_every` labels learned the model is copied (a candidate);
  a candidate that has passed `probation` more labels without an alarm becomes known-good (and
  the learner pins it in the registry). The known-good model scores each label beside the live
  one, for the suspicion test and for the quality test.
- **Quality guardrail**: a Page-Hinkley test on how much worse the live model's log loss is than
  the known-good one's on the same labels. It fires when the live model has been damaged, not on
  a genuine drift: there the live model adapts and beats the frozen one.

**Rollback**: a quarantined source whose labels the live model had learned since the known-good
copy, or a quality alarm, replaces the live model's state by a copy of the known-good one, in
place. After a quarantine the labels learned since the copy are learned again, but the
quarantined sources' (the guard keeps them until the next known-good copy): the honest learning
is not lost. After a quality alarm nothing is learned again (what did the damage is unknown).
A refused label is not lost either: the learner emits it as a dead letter with the reason, for
review.

The guard's state travels on the model object (as `core.progressive`'s scores do): it is saved,
resumed and replayed with it, so batch and streaming decide alike. It is left out of published
versions.

>>> from river import compose, linear_model
>>> guard = Guard(pin_every=10, probation=10, threshold=3.0)
>>> model = compose.Select("x") | linear_model.LogisticRegression()
>>> for t in range(20):  # honest: a click now and then
...     x = {"user_id": "u1", "x": 1.0}
...     _ = guard.screen(model, x, t % 4 == 0, t)
...     model.learn_one(x, t % 4 == 0); guard.learned(model, x, t % 4 == 0)
>>> state(model).known_good is not None
True
>>> for t in range(8):  # a bot: always a click, learned until it is caught
...     x = {"user_id": "bot", "x": 1.0}
...     if guard.screen(model, x, True, 20 + t) is None:
...         model.learn_one(x, True); guard.learned(model, x, True)
>>> [(a.kind, a.step, a.to_step) for a in state(model).drain()]
[('candidate', 10, None), ('known_good', 10, None), ('candidate', 20, None), ('quarantine', 26, None), ('rollback', 26, 10)]
>>> guard.screen(model, {"user_id": "bot", "x": 1.0}, True, 30)
'quarantined: source bot'

"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import math

from core.lifecycle import replace_state
from monitoring.drift import EPS, Spec

ATTRIBUTE = "_streamml_guard"  # where a model keeps its guard's state
HOUR_MS = 3_600_000


@dataclasses.dataclass(frozen=True)
class Action:
    """What the guard did, for the learner to act on and report: `candidate` (a copy taken),
    `known_good` (a candidate passed probation, or a manual rollback adopted), `quarantine` (a
    source), `rollback`, `dropped` (a candidate given up)."""
    kind: str
    step: int  # labels learned by the live model when it happened
    event_time: int | None = None
    detail: str = ""
    to_step: int | None = None  # a rollback's known-good version, by its step
    to_version: int | None = None  # and in the registry
    # The copy it is about (a candidate, a known-good version, the one rolled back to), and the
    # one it replaces (the known-good version before; the candidate a rollback drops): for the
    # learner to publish, pin and unpin.
    snapshot: "Snapshot | None" = dataclasses.field(default=None, repr=False, compare=False)
    previous: "Snapshot | None" = dataclasses.field(default=None, repr=False, compare=False)


@dataclasses.dataclass
class Snapshot:
    model: object
    step: int
    version: int | None = None  # its version in the registry, once the learner published it


@dataclasses.dataclass
class State:
    """What a guarded model carries."""
    step: int = 0  # labels learned
    cusum: dict = dataclasses.field(default_factory=dict)  # source -> score
    tokens: dict = dataclasses.field(default_factory=dict)  # source -> (tokens, at event time)
    quarantined: dict = dataclasses.field(default_factory=dict)  # source -> Action
    candidate: Snapshot | None = None
    known_good: Snapshot | None = None
    quality: object = None  # the quality test's detector
    # (step, x, y) of each label learned since the known-good copy (since the start before one):
    # what a rollback learns again, but the quarantined sources' labels.
    learned: list = dataclasses.field(default_factory=list)
    actions: list = dataclasses.field(default_factory=list)  # not yet drained
    history: list = dataclasses.field(default_factory=list)  # every action but candidates

    def act(self, action: Action) -> None:
        self.actions.append(action)
        if action.kind not in ("candidate", "dropped"):
            self.history.append(action)

    def drain(self) -> list:
        out, self.actions = self.actions, []
        return out


QUALITY = Spec("PageHinkley", {"mode": "up", "delta": 0.01, "threshold": 50.0, "alpha": 1.0,
                               "min_instances": 1000})


@dataclasses.dataclass(frozen=True)
class Guard:
    """The guard's settings; its state is on each model (`state`)."""
    source: str = "user_id"
    pin_every: int = 5_000
    probation: int = 5_000
    odds: float = 4.0
    threshold: float = 12.0
    budget_per_hour: float | None = None
    quality: Spec | None = QUALITY

    def __post_init__(self):
        if self.pin_every < 1 or self.probation < 0:
            raise ValueError(f"pin_every must be >= 1 and probation >= 0 (got {self.pin_every}, {self.probation})")
        if self.odds <= 1 or self.threshold <= 0:
            raise ValueError(f"odds must be > 1 and threshold > 0 (got {self.odds}, {self.threshold})")
        if self.budget_per_hour is not None and self.budget_per_hour <= 0:
            raise ValueError(f"budget_per_hour must be > 0, got {self.budget_per_hour}")

    def screen(self, model, x: dict, y, event_time: int, proba: dict | None = None) -> str | None:
        """Before learning label `y` of features `x`: why it must not be learned, or None.
        `proba`: the live model's prediction of `x`, if the learner has it. May roll `model` back."""
        s = state(model)
        source = x.get(self.source)
        if source in s.quarantined:
            return f"quarantined: source {source}"
        if self.budget_per_hour is not None and source is not None and not self._spend(s, source, event_time):
            return f"over budget: source {source} learned {self.budget_per_hour:g} labels in the last hour"
        if s.known_good is None:
            return None  # armed once a known-good version exists
        p_ref = _p_true(s.known_good.model.predict_proba_one(x))
        if p_ref is None:
            return None
        if source is not None:
            score = max(0.0, s.cusum.get(source, 0.0) + _llr(bool(y), p_ref, self.odds))
            s.cusum[source] = score
            if score >= self.threshold:
                s.quarantined[source] = Action("quarantine", s.step, event_time,
                                               f"source {source}: CUSUM {score:.1f} >= {self.threshold:g}")
                s.act(s.quarantined[source])
                s.cusum.pop(source)
                # Only if what it sent reached the live model (learned after the known-good copy).
                if any(x.get(self.source) == source for _, x, _ in s.learned):
                    self._roll_back(model, s, event_time, f"source {source} quarantined", replay=True)
                return f"quarantined: source {source}"
        if self.quality is not None:
            p_live = _p_true(proba if proba is not None else model.predict_proba_one(x))
            if p_live is not None:
                if s.quality is None:
                    s.quality = self.quality.make()
                s.quality.update(_log_loss(bool(y), p_live) - _log_loss(bool(y), p_ref))
                if s.quality.drift_detected:
                    s.quality = None
                    # Whatever did the damage, it is among the labels learned since the copy: none
                    # is learned again.
                    self._roll_back(model, s, event_time, "quality: the live model's log loss exceeds "
                                                          f"known-good version {s.known_good.version}'s",
                                    replay=False)
        return None

    def learned(self, model, x: dict, y, event_time: int | None = None) -> None:
        """After the model learned label `y` of `x`: candidates and known-good versions, at the cadence."""
        s = state(model)
        s.step += 1
        s.learned.append((s.step, x, y))
        if s.candidate is not None and s.step - s.candidate.step >= self.probation:
            previous, s.known_good, s.candidate = s.known_good, s.candidate, None
            s.learned = [entry for entry in s.learned if entry[0] > s.known_good.step]
            s.quality = None  # a new reference: the live model starts again level with it
            s.act(Action("known_good", s.known_good.step, event_time, snapshot=s.known_good, previous=previous))
        if s.step % self.pin_every == 0 and s.candidate is None:
            with detached(model):
                s.candidate = Snapshot(copy.deepcopy(model), s.step)
            s.act(Action("candidate", s.step, event_time, snapshot=s.candidate))

    @staticmethod
    def state(model) -> "State":
        """The guard state `model` carries (`state`)."""
        return state(model)

    def adopted(self, model, version: int) -> None:
        """An operator rolled the model back to a version (`pipelines.rollback`): it is the
        known-good one from now on; the copies and labels kept since the one before are dropped."""
        s = state(model)
        previous, dropped = s.known_good, s.candidate
        with detached(model):
            s.known_good, s.candidate, s.learned = Snapshot(copy.deepcopy(model), s.step, version), None, []
        s.quality = None
        s.act(Action("known_good", s.step, detail=f"adopted manual rollback v{version}", snapshot=s.known_good,
                     previous=previous))
        if dropped is not None:
            s.act(Action("dropped", s.step, snapshot=dropped, previous=dropped))

    @staticmethod
    def summary(model) -> dict:
        """What the guard has done so far, for a published version's metrics."""
        s = state(model)
        rollbacks = [a for a in s.history if a.kind == "rollback"]
        out = {"quarantined": len(s.quarantined), "rollbacks": len(rollbacks)}
        if s.known_good is not None:
            out["known_good"] = {"step": s.known_good.step, "version": s.known_good.version}
        if rollbacks:
            out["recent_rollbacks"] = [{"at_step": a.step, "to_step": a.to_step, "reason": a.detail}
                                       for a in rollbacks[-5:]]
        return out

    @staticmethod
    def detached(model):
        """`model` without its guard state for a while (`detached`)."""
        return detached(model)

    def _spend(self, s: State, source, event_time: int) -> bool:
        tokens, at = s.tokens.get(source, (self.budget_per_hour, event_time))
        tokens = min(self.budget_per_hour, tokens + max(0, event_time - at) * self.budget_per_hour / HOUR_MS)
        s.tokens[source] = (tokens - 1, event_time) if tokens >= 1 else (tokens, event_time)
        return tokens >= 1

    def _roll_back(self, model, s: State, event_time: int, why: str, replay: bool) -> None:
        """The model's state replaced by the last known-good version's (later copies dropped);
        with `replay`, the labels learned since then learned again, but the quarantined sources'."""
        dropped, s.candidate = s.candidate, None
        replace_state(model, s.known_good.model)
        s.learned = [entry for entry in s.learned if replay and entry[1].get(self.source) not in s.quarantined]
        for _, x, y in s.learned:
            model.learn_one(x, y)
        with detached(model):
            restored = Snapshot(copy.deepcopy(model), s.step)
        s.act(Action("rollback", s.step, event_time, f"{why}; {len(s.learned)} labels learned again",
                     to_step=s.known_good.step, to_version=s.known_good.version, snapshot=restored,
                     previous=dropped))


def state(model) -> State:
    """The guard state `model` carries, new if none yet."""
    s = model.__dict__.get(ATTRIBUTE)
    if s is None:
        s = model.__dict__[ATTRIBUTE] = State()
    return s


@contextlib.contextmanager
def detached(model):
    """`model` without its guard state for a while (a copy, a published version)."""
    s = model.__dict__.pop(ATTRIBUTE, None)
    try:
        yield model
    finally:
        if s is not None:
            model.__dict__[ATTRIBUTE] = s


def _p_true(proba: dict | None) -> float | None:
    return None if not proba else float(proba.get(True, 0.0))


def _llr(y: bool, p: float, odds: float) -> float:
    """log P(y | odds of a click raised `odds` times) / P(y | p)."""
    p = min(max(p, EPS), 1 - EPS)
    return (math.log(odds) if y else 0.0) - math.log(1 - p + odds * p)


def _log_loss(y: bool, p: float) -> float:
    p = min(max(p, EPS), 1 - EPS)
    return -math.log(p if y else 1 - p)
