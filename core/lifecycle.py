"""A learned model's lifecycle in the registry, without Beam: what a learner's guard did
(`monitoring.guard`: known-good versions pinned, rollbacks published) and the rollbacks an
operator made (`pipelines.rollback`), adopted as the live model's state.

A rollback replaces the model's state in place (`replace_state`), so that whoever holds the model
object (a worker's live cache, a batch pass) holds the rolled-back one.
"""
from __future__ import annotations

import copy
import logging

from core import progressive
from core.records import Alert

# Registry pins of a guarded model's versions: its known-good one, and the candidate on probation.
KNOWN_GOOD, CANDIDATE = "known-good", "known-good candidate"
CARRIED_PREFIX = "_streamml_"  # what a model carries along (core.progressive, monitoring.guard)
log = logging.getLogger(__name__)


def record(publisher, key: str, model, guard) -> list[Alert]:
    """What `guard` did while a block was applied, in the registry and the log: a candidate
    published (and pinned: retention would drop it before its probation ends), a known-good
    version pinned (the one before unpinned), a rollback published. Returns the alerts, one per
    incident (a quarantine and the rollback it made are one), and a retrain signal for each
    incident of decaying quality."""
    alerts = []
    for action in guard.state(model).drain():
        if action.kind in ("quarantine", "drift"):
            log.warning("model %r: %s %s at label %d", key, action.kind, action.detail, action.step)
            alerts.append(Alert("alert", action.kind, key, action.event_time, action.detail))
            if action.kind == "drift":
                alerts.append(Alert("retrain", "drift", key, action.event_time, f"drift: {action.detail}"))
            continue
        if action.kind == "rollback":
            log.warning("model %r rolled back to its known-good copy of label %d (%s)",
                        key, action.to_step, action.detail)
        version = _registered(publisher, key, model, action) if publisher is not None else None
        if action.kind == "rollback":
            poisoned = action.source is not None  # the quarantine just before it made it: one incident
            reason = (f"{alerts.pop().reason}; " if poisoned else "") + (
                f"rolled back to the known-good version of label {action.to_step} ({action.detail})")
            alerts.append(Alert("alert", "poisoning" if poisoned else "quality", key, action.event_time, reason,
                                version))
            if not poisoned:
                alerts.append(Alert("retrain", "quality", key, action.event_time, action.detail))
    return alerts


def _registered(publisher, key: str, model, action) -> int | None:
    """The registry's side of a guard's action; the version it published, if any."""
    snapshot, previous, version = action.snapshot, action.previous, None
    if snapshot is None:
        return None
    if action.kind == "candidate":
        version = snapshot.version = publisher.publish(
            key, snapshot.model, snapshot.step, clock_ms=action.event_time,
            metrics=progressive.summary(snapshot.model)).version
        publisher.pin(key, snapshot.version, CANDIDATE)
    elif action.kind == "known_good" and snapshot.version is not None:
        publisher.pin(key, snapshot.version, KNOWN_GOOD)
    elif action.kind == "rollback":  # the known-good version, and what was learned again
        version = publisher.publish(key, snapshot.model, action.step, clock_ms=action.event_time, metrics={
            **progressive.summary(model), "rollback_to": action.to_version,
            "rollback_reason": action.detail}).version
    if previous is not None and previous.version is not None:
        _unpin(publisher, key, previous.version)
    return version


def adopt_manual_rollback(publisher, key: str, model, guard=None) -> None:
    """A version an operator rolled the key back to (`pipelines.rollback`) becomes the live
    model's state, so that the next versions learn on from it (and, guarded, the known-good one)."""
    found = publisher.manual_rollback(key)
    if found is None:
        return
    version, rolled_back_to = found
    replace_state(model, rolled_back_to)
    if guard is not None:
        guard.adopted(model, version.version)
    log.warning("model %r adopted manual rollback v%d (= v%s)", key, version.version,
                version.metrics.get("rollback_to"))


def replace_state(model, source) -> None:
    """`model`'s state replaced, in place, by a copy of `source`'s, but for what travels with the
    model itself (attributes named `_streamml_*`: its progressive scores, its guard's state)."""
    carried = {name: value for name, value in model.__dict__.items() if name.startswith(CARRIED_PREFIX)}
    model.__dict__.clear()
    model.__dict__.update({name: value for name, value in copy.deepcopy(source).__dict__.items()
                           if not name.startswith(CARRIED_PREFIX)})
    model.__dict__.update(carried)


def _unpin(publisher, key: str, version: int) -> None:
    try:
        publisher.unpin(key, version)
    except ValueError:  # promoted to a stage meanwhile: pinned by it
        pass
