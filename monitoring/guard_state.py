"""What a guarded model carries (`monitoring.guard`): the guard's state on the model object, its
copies of the model, and the actions it took for the learner to act on.
"""
from __future__ import annotations

import contextlib
import dataclasses

ATTRIBUTE = "_streamml_guard"  # where a model keeps its guard's state


@dataclasses.dataclass(frozen=True)
class Action:
    """What the guard did, for the learner to act on and report: `candidate` (a copy taken),
    `known_good` (a candidate passed probation, or a manual rollback adopted), `quarantine` (a
    source), `rollback`, `dropped` (a candidate given up), `drift` (an incident)."""
    kind: str
    step: int  # labels learned by the live model when it happened
    event_time: int | None = None
    detail: str = ""
    to_step: int | None = None  # a rollback's known-good version, by its step
    to_version: int | None = None  # and in the registry
    source: object = None  # the quarantined source a rollback is for (None: a quality alarm)
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
    labels: float = 0.0  # clicks among the recent labels (decayed by CALIBRATION per label)
    expected: float = 0.0  # and the known-good model's predictions of them
    tokens: dict = dataclasses.field(default_factory=dict)  # source -> (tokens, at event time)
    quarantined: dict = dataclasses.field(default_factory=dict)  # source -> Action
    candidate: Snapshot | None = None
    known_good: Snapshot | None = None
    quality: object = None  # the quality test's detector
    monitor: object = None  # the drift detectors (monitoring.drift.Monitor)
    drift_at: int | None = None  # the step of the latest drift alarm
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
