"""A learner's guard against poisoning: learning budgets, suspicious sources, known-good
versions and rollback.

The learner (`core.learning.Learner`, given a `Guard`) asks it about every label before learning
it. Per source (the feature that names who sent the event, `user_id` by default):

- **Budget**: a source learns at most `budget_per_hour` labels per hour of event time (a token
  bucket, its burst one hour's worth), so no one user moves the model much. A label over budget
  is not learned.
- **Suspicion**: a one-sided Bernoulli CUSUM of the source's labels against the known-good
  model's predictions, for clicks `odds` times likelier than predicted. The predictions are
  raised as far as all sources' recent labels run above them, so that a surge of clicks from
  everyone (a genuine drift) raises no one's score. An honest source drifts down (its labels are
  what the model expects), a source that flips labels or sends fake clicks climbs. At
  `threshold` it is quarantined: its labels are never learned again.
- **Known-good versions**: every `pin_every` labels learned the model is copied (a candidate);
  a candidate that has passed `probation` more labels without an alarm becomes known-good (and
  the learner pins it in the registry). The known-good model scores each label beside the live
  one, for the suspicion test and for the quality test.
- **Quality guardrail**: a Page-Hinkley test on how much worse the live model's log loss is than
  the known-good one's on the same labels. It fires when the live model has been damaged, not on
  a genuine drift: there the live model adapts and beats the frozen one.
- **Drift** (`drift=True`): `monitoring.drift.Monitor` on the live model's own predictions of the
  labels (the calibration CUSUM, and the log loss). A genuine drift is not rolled back: it is
  reported (one `drift` action per incident, alarms further than `INCIDENT` labels apart) and,
  as quality decays, the learner sends a retrain signal.

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
>>> guard = Guard(pin_every=100, probation=100, threshold=3.0)
>>> model = compose.Select("x") | linear_model.LogisticRegression()
>>> def label(user, y, t):  # screened, then learned unless refused
...     x = {"user_id": user, "x": 1.0}
...     if guard.screen(model, x, y, t) is None:
...         model.learn_one(x, y); guard.learned(model, x, y)
>>> for t in range(200):  # honest users: a click now and then
...     label(f"u{t % 10}", t % 10 == t // 10 % 10, t)
>>> state(model).known_good is not None
True
>>> for t in range(200, 260):  # a bot among them: always a click, learned until it is caught
...     label("bot" if t % 4 == 0 else f"u{t % 10}", t % 4 == 0 or t % 10 == t // 10 % 10, t)
>>> [(a.kind, a.step, a.to_step) for a in state(model).drain()]
[('candidate', 100, None), ('known_good', 100, None), ('candidate', 200, None), ('quarantine', 216, None), ('rollback', 216, 100)]
>>> guard.screen(model, {"user_id": "bot", "x": 1.0}, True, 300)
'quarantined: source bot'

"""
from __future__ import annotations

import copy
import dataclasses
import math

from core.lifecycle import replace_state
from monitoring.guard_state import Action, Snapshot, State, detached, state
from monitoring.drift import EPS, LOG_LOSS, TUNED, Monitor, Spec

HOUR_MS = 3_600_000
CALIBRATION = 0.5 ** (1 / 500)  # per label: the population's recent labels weigh with a half-life of 500
INCIDENT = 5_000  # drift alarms closer than this many labels to the one before are the same incident


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
    drift: bool = True

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
        p_live = None
        if s.known_good is not None:  # armed once a known-good version exists
            p_ref = _p_true(s.known_good.model.predict_proba_one(x))
            if p_ref is not None and source is not None and self._suspect(model, s, source, y, p_ref, event_time):
                return f"quarantined: source {source}"
            if p_ref is not None and self.quality is not None:
                p_live = _p_true(proba if proba is not None else model.predict_proba_one(x))
                if p_live is not None:
                    self._check_quality(model, s, y, p_live, p_ref, event_time)
        if self.drift and s.known_good is not None:  # not while the model first learns
            if p_live is None:
                p_live = _p_true(proba if proba is not None else model.predict_proba_one(x))
            if p_live is not None:
                self._watch_drift(s, y, p_live, event_time)
        return None

    def _suspect(self, model, s: State, source, y, p_ref: float, event_time: int) -> bool:
        """The source's CUSUM, one label on; at the threshold it is quarantined (and the model rolled
        back if the source's labels had reached it since the known-good copy). Whether it was."""
        # Against the known-good prediction, raised when the whole population's recent labels run
        # above it: a surge of clicks from everyone (a genuine drift) is not anyone's fault.
        s.labels, s.expected = s.labels * CALIBRATION + bool(y), s.expected * CALIBRATION + p_ref
        scaled = min(p_ref * max(1.0, (s.labels + 1.0) / (s.expected + 1.0)), 1 - EPS)
        score = max(0.0, s.cusum.get(source, 0.0) + _llr(bool(y), scaled, self.odds))
        s.cusum[source] = score
        if score < self.threshold:
            return False
        s.quarantined[source] = Action("quarantine", s.step, event_time,
                                       f"source {source}: CUSUM {score:.1f} >= {self.threshold:g}")
        s.act(s.quarantined[source])
        s.cusum.pop(source)
        if any(x.get(self.source) == source for _, x, _ in s.learned):
            self._roll_back(model, s, event_time, f"source {source} quarantined", replay=True, source=source)
        return True

    def _check_quality(self, model, s: State, y, p_live: float, p_ref: float, event_time: int) -> None:
        if s.quality is None:
            s.quality = self.quality.make()
        s.quality.update(_log_loss(bool(y), p_live) - _log_loss(bool(y), p_ref))
        if s.quality.drift_detected:
            s.quality = None
            # Whatever did the damage, it is among the labels learned since the copy: none is
            # learned again.
            self._roll_back(model, s, event_time, "quality: the live model's log loss exceeds its known-good "
                                                  f"copy of label {s.known_good.step}'s", replay=False)

    def _watch_drift(self, s: State, y, p_live: float, event_time: int) -> None:
        """The live model's own predictions under `monitoring.drift`'s tuned detectors: an alarm
        further than `INCIDENT` labels from the one before is a new incident."""
        if s.monitor is None:
            s.monitor = Monitor({**TUNED, "log_loss": LOG_LOSS})
        for alarm in s.monitor.update(bool(y), p_live):
            if s.drift_at is None or s.step - s.drift_at > INCIDENT:
                s.act(Action("drift", s.step, event_time, f"{alarm.signal}: {alarm.detector}"))
            s.drift_at = s.step

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

    def _roll_back(self, model, s: State, event_time: int, why: str, replay: bool, source=None) -> None:
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
                     to_step=s.known_good.step, to_version=s.known_good.version, source=source, snapshot=restored,
                     previous=dropped))


def _p_true(proba: dict | None) -> float | None:
    return None if not proba else float(proba.get(True, 0.0))


def _llr(y: bool, p: float, odds: float) -> float:
    """log P(y | odds of a click raised `odds` times) / P(y | p)."""
    p = min(max(p, EPS), 1 - EPS)
    return (math.log(odds) if y else 0.0) - math.log(1 - p + odds * p)


def _log_loss(y: bool, p: float) -> float:
    p = min(max(p, EPS), 1 - EPS)
    return -math.log(p if y else 1 - p)
