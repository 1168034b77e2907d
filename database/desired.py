"""The fleet's desired state: read by every replica, changed by rollout, pin and rollback (each change recorded)."""
from __future__ import annotations

from dataclasses import dataclass

from database.connect import is_postgres, write_transaction
from database.models import DesiredState, DesiredStateChange, to_datetime, to_epoch

# promote / canary-rollback: a canary's automatic decision (database/canary.py); canary: a rollout that starts one
ACTIONS = ("rollout", "pin", "rollback", "canary", "promote", "canary-rollback")


@dataclass(frozen=True)
class Desired:
    """What every replica should serve for one model."""

    model: str
    version: str
    pinned: bool = False
    candidate: str = ""
    candidate_share: float = 0.0
    updated_at: float = 0.0
    updated_by: str = ""
    reason: str = ""


class NoPreviousVersion(LookupError):
    """A rollback with nothing recorded to roll back to."""


def _desired(row: DesiredState) -> Desired:
    return Desired(row.model, row.version, bool(row.pinned), row.candidate, row.candidate_share,
                   to_epoch(row.updated_at), row.updated_by, row.reason)


def all_desired() -> dict[str, Desired]:
    """Every model's desired state, by model name (a model without a row serves its newest stored version)."""
    return {row.model: _desired(row) for row in DesiredState.select()}


def get_desired(model: str) -> Desired | None:
    row = DesiredState.get_or_none(DesiredState.model == model)
    return _desired(row) if row else None


def set_desired(model: str, version: str, action: str, at: float, *, serving: str = "", pinned: bool = False,
                candidate: str = "", candidate_share: float = 0.0, by: str = "", reason: str = "") -> Desired:
    """Record the version every replica should serve (one transaction: the row and its history entry).

    serving: the version served before this change when no desired state was recorded yet (the history's
    "previous", so the first rollout can be rolled back)."""
    if action not in ACTIONS:
        raise ValueError(f"action {action!r} is not one of {ACTIONS}")
    with write_transaction():  # reads the current row, then writes
        current = _locked(model)
        previous = current.version if current else serving
        values = {DesiredState.version: version, DesiredState.pinned: pinned, DesiredState.candidate: candidate,
                  DesiredState.candidate_share: candidate_share, DesiredState.updated_at: to_datetime(at),
                  DesiredState.updated_by: by, DesiredState.reason: reason}
        if current:
            DesiredState.update(values).where(DesiredState.model == model).execute()
        else:
            DesiredState.insert({DesiredState.model: model, **values}).execute()
        DesiredStateChange.insert(model=model, action=action, version=version, previous_version=previous,
                                  pinned=pinned, candidate=candidate, candidate_share=candidate_share,
                                  changed_at=to_datetime(at), changed_by=by, reason=reason).execute()
    return Desired(model, version, pinned, candidate, candidate_share, at, by, reason)


def rollback_target(model: str) -> str:
    """The version that served before the current desired one: the previous version of the newest change that
    moved the model to its current version (so rolling back twice goes further back, not to and fro)."""
    current = get_desired(model)
    if current is None:
        raise NoPreviousVersion(f"model {model!r} has no recorded desired state to roll back from")
    version = current.version
    for change in (DesiredStateChange.select().where(DesiredStateChange.model == model)
                   .order_by(DesiredStateChange.id.desc())):
        if change.version != version:
            continue
        if change.action == "rollback":
            # a rollback to `version`: skip to the change that first brought `version` in before it
            continue
        if change.previous_version and change.previous_version != version:
            return change.previous_version
    raise NoPreviousVersion(f"model {model!r}: no version before {version} is recorded")


def history(model: str, limit: int = 50) -> list[dict]:
    """The newest changes of a model's desired state, newest first."""
    query = (DesiredStateChange.select().where(DesiredStateChange.model == model)
             .order_by(DesiredStateChange.id.desc()).limit(limit))
    return [{"action": c.action, "version": c.version, "previous_version": c.previous_version,
             "pinned": bool(c.pinned), "at": to_epoch(c.changed_at), "by": c.changed_by, "reason": c.reason}
            for c in query]


def _locked(model: str) -> DesiredState | None:
    """The current row, locked for this transaction on PostgreSQL (two admins at once: one after the other)."""
    query = DesiredState.select().where(DesiredState.model == model)
    if is_postgres():
        query = query.for_update()
    return query.first()
