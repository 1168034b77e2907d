"""Canary runs: a candidate version taking a share of a model's traffic beside the serving version (the baseline),
compared on the figures the database already keeps, and promoted or rolled back by the operator's criteria.

One row per run in canary_runs (migration m0009_canary). record_change() is the desired-state change every admin
call makes: it ends the model's running canary (status "ended") and, when the change names a candidate, starts a
new one, in one transaction with the desired_state row and its history entry. Replicas add what only they see
(tally(): rows compared with the serving version and how many agreed, calls and errors per side); figures() reads
the rest from the aggregates (stats_rollup per minute and version: answered rows and latency; stats_feedback:
accuracy per version over the feedback that arrived), never the raw predictions table. decide() applies a decision
once: the run's status moves from "running" in a conditional UPDATE (two replicas deciding at once: one applies,
the other's UPDATE matches no row), then the desired state changes (history action "promote" or
"canary-rollback", the reason the decision's summary) in the same transaction.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from database import aggregates
from database import desired as desired_table
from database.connect import write_transaction
from database.desired import Desired
from database.models import CanaryRun, to_datetime, to_epoch

RUNNING, PROMOTED, ROLLED_BACK, ENDED = "running", "promoted", "rolled_back", "ended"
TALLIES = ("compared", "agreed", "serving_calls", "serving_errors", "candidate_calls", "candidate_errors")


@dataclass(frozen=True)
class Run:
    """One canary run as recorded."""

    id: int
    model: str
    baseline: str
    candidate: str
    share: float
    criteria: dict[str, Any]
    started_at: float
    started_by: str = ""
    status: str = RUNNING
    decided_at: float = 0.0
    decided_by: str = ""
    figures: dict[str, Any] = field(default_factory=dict)
    summary: str = ""
    tallies: dict[str, int] = field(default_factory=dict)


def _run(row: CanaryRun) -> Run:
    return Run(row.id, row.model, row.baseline, row.candidate, row.share, json.loads(row.criteria or "{}"),
               to_epoch(row.started_at), row.started_by, row.status,
               to_epoch(row.decided_at) if row.decided_at else 0.0, row.decided_by,
               json.loads(row.figures or "{}"), row.summary, {t: int(getattr(row, t)) for t in TALLIES})


def running() -> list[Run]:
    """Every running canary (at most one per model)."""
    return [_run(r) for r in CanaryRun.select().where(CanaryRun.status == RUNNING).order_by(CanaryRun.id)]


def runs(model: str, limit: int = 10) -> list[Run]:
    """A model's newest canary runs, newest first (the running one, if any, first)."""
    query = CanaryRun.select().where(CanaryRun.model == model).order_by(CanaryRun.id.desc()).limit(limit)
    return [_run(r) for r in query]


def record_change(model: str, version: str, action: str, at: float, *, serving: str = "", pinned: bool = False,
                  candidate: str = "", candidate_share: float = 0.0, by: str = "", reason: str = "",
                  criteria: dict[str, Any] | None = None) -> Desired:
    """desired.set_desired, and in the same transaction: the model's running canary ends (any change replaces it)
    and a change naming a candidate starts a new one against `version` with criteria (JSON-able)."""
    if candidate and action == "rollout":
        action = "canary"
    with write_transaction():
        recorded = desired_table.set_desired(model, version, action, at, serving=serving, pinned=pinned,
                                             candidate=candidate, candidate_share=candidate_share, by=by,
                                             reason=reason)
        for row in CanaryRun.select().where((CanaryRun.model == model) & (CanaryRun.status == RUNNING)):
            ended = _run(row)  # its figures as they stood when the change ended it
            (CanaryRun.update(status=ENDED, decided_at=to_datetime(at), decided_by=by,
                              figures=json.dumps(figures(ended, at), sort_keys=True, default=str),
                              summary=f"ended by a {action} to {version}" + (f" ({reason})" if reason else ""))
             .where((CanaryRun.id == ended.id) & (CanaryRun.status == RUNNING)).execute())
        if candidate:
            CanaryRun.insert(model=model, baseline=version, candidate=candidate, share=candidate_share,
                             criteria=json.dumps(criteria or {}, sort_keys=True), started_at=to_datetime(at),
                             started_by=by, status=RUNNING).execute()
    return recorded


def tally(run_id: int, counts: dict[str, int]) -> None:
    """Add a replica's counts (names from TALLIES) to a running canary; a run no longer running takes none."""
    counts = {k: int(v) for k, v in counts.items() if v}
    if not counts:
        return
    unknown = set(counts) - set(TALLIES)
    if unknown:
        raise ValueError(f"unknown canary tallies {sorted(unknown)}")
    values = {getattr(CanaryRun, k): getattr(CanaryRun, k) + v for k, v in counts.items()}
    CanaryRun.update(values).where((CanaryRun.id == run_id) & (CanaryRun.status == RUNNING)).execute()


def _side(model: str, version: str, start: int, end: int) -> dict[str, Any]:
    """Answered rows, latency percentiles and feedback accuracy of one version over [start, end) (minutes)."""
    answered = aggregates.totals(start, end, model, version)
    p50, _, p99 = answered.latency_ms
    found = aggregates.version_quality(start, end, model, version)
    return {"version": version, "requests": answered.total, "p50_ms": round(p50, 3), "p99_ms": round(p99, 3),
            "feedback": found[0].feedback_count if found else 0,
            "accuracy": round(found[0].accuracy, 4) if found else None}


def figures(run: Run, now: float) -> dict[str, Any]:
    """What the decision rule reads: each side's answered rows, latency, feedback and accuracy since the run
    started (the minute it started in, to the minute after now: the aggregates' resolution), the replicas' calls,
    errors and agreement tallies, and the seconds elapsed."""
    start, end = aggregates.window(run.started_at, now)
    assert start is not None
    serving = _side(run.model, run.baseline, start, end)
    candidate = _side(run.model, run.candidate, start, end)
    t = run.tallies
    for side, name in ((serving, "serving"), (candidate, "candidate")):
        calls, errors = t.get(f"{name}_calls", 0), t.get(f"{name}_errors", 0)
        side.update(calls=calls, errors=errors, error_rate=round(errors / calls, 4) if calls else 0.0)
    compared, agreed = t.get("compared", 0), t.get("agreed", 0)
    return {"elapsed_s": round(max(0.0, now - run.started_at), 2), "serving": serving, "candidate": candidate,
            "agreement": {"compared": compared, "agreed": agreed,
                          "rate": round(agreed / compared, 4) if compared else None}}


def decide(run: Run, decision: str, figures: dict[str, Any], summary: str, at: float, by: str) -> Desired | None:
    """Apply a decision ("promote": the candidate becomes the serving version; "rollback": the candidate is
    cleared) once: None when the run is no longer running (another replica decided first, or a change ended it)."""
    if decision not in ("promote", "rollback"):
        raise ValueError(f"decision {decision!r} is not promote or rollback")
    status = PROMOTED if decision == "promote" else ROLLED_BACK
    text = json.dumps(figures, sort_keys=True, default=str)
    with write_transaction() as transaction:
        claimed = (CanaryRun.update(status=status, decided_at=to_datetime(at), decided_by=by, figures=text,
                                    summary=summary)
                   .where((CanaryRun.id == run.id) & (CanaryRun.status == RUNNING)).execute())
        if claimed != 1:
            return None
        current = desired_table._locked(run.model)
        if current is None or current.candidate != run.candidate or current.version != run.baseline:
            transaction.rollback()  # the desired state moved on without ending the run: leave both as they are
            return None
        version = run.candidate if decision == "promote" else run.baseline
        return desired_table.set_desired(run.model, version, "promote" if decision == "promote" else
                                         "canary-rollback", at, pinned=bool(current.pinned) and decision != "promote",
                                         by=by, reason=summary)

