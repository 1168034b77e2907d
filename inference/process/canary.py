"""Canary rollouts across the fleet: every replica holds the candidate its desired state names, adds its tallies
to the run's row and runs the decision rule on each poll; the first replica whose analysis reaches a decision
records it (database/canary.py decide(): once, whoever else decides at the same time), and every replica follows
the new desired state like any other change.

The analysis reads the aggregates (a few small queries per running canary per poll) and the run's row; while the
database cannot be read nothing is decided and this replica keeps its tallies for the next poll.
"""
from __future__ import annotations

import logging
import time
from dataclasses import replace

from database import canary as table
from database.connect import DatabaseUnavailable, session
from database.desired import Desired
from inference.errors import PredmeshError
from inference.models.canary import Criteria, evaluate
from inference.models.registry import ModelRegistry

log = logging.getLogger(__name__)


class CanaryFollower:
    """This replica's part in the fleet's canaries: hold what the desired state names, tally, analyse, decide."""

    def __init__(self, registry: ModelRegistry, name: str):
        self.registry = registry
        self.canaries = registry.canaries
        self.name = name
        self._refused: dict[str, str] = {}  # model -> candidate that cannot load here (logged once)

    def follow(self, desired: dict[str, Desired]) -> None:
        """Hold every candidate the desired state names (with its share); drop the others."""
        for model in set(self.canaries.held()) - {m for m, d in desired.items() if d.candidate}:
            self.canaries.drop(model)
        for wanted in desired.values():
            if wanted.candidate:
                self.follow_one(wanted)

    def follow_one(self, wanted: Desired) -> None:
        if not wanted.candidate:
            self.canaries.drop(wanted.model)
            return
        held = self.canaries.held().get(wanted.model)
        if held == (wanted.candidate, wanted.candidate_share):
            return
        try:
            self.canaries.hold(wanted.model, wanted.candidate, wanted.candidate_share)
        except PredmeshError as exc:
            self.registry.metrics.desired_failures.labels(wanted.model).inc()
            if self._refused.get(wanted.model) != wanted.candidate:
                log.error("model %s: the canary candidate %s cannot load on this replica; its calls all go to the "
                          "serving version: %s", wanted.model, wanted.candidate, exc)
            self._refused[wanted.model] = wanted.candidate
            self.canaries.drop(wanted.model)
        else:
            self._refused.pop(wanted.model, None)

    def analyse(self, now: float | None = None) -> list[Desired]:
        """Add this replica's tallies to the running canaries and decide those whose criteria say so; returns
        the desired states this replica recorded (to apply at once)."""
        taken = self.canaries.take_tallies()
        decided: list[Desired] = []
        if not taken and not self.canaries.held():
            return decided  # no canary here: no query (a replica that cannot hold a candidate leaves it to others)
        try:
            with session():
                runs = table.running()
                by_key = {(r.model, r.candidate): r for r in runs}
                for key in list(taken):
                    counts, run = taken[key], by_key.get(key)
                    if run is not None:
                        table.tally(run.id, dict(counts))
                        by_key[key] = replace(run, tallies={t: run.tallies.get(t, 0) + counts.get(t, 0)
                                                            for t in table.TALLIES})
                    del taken[key]  # written (or of a run no longer running): not given back
                for run in by_key.values():
                    criteria = Criteria.from_dict(run.criteria)
                    if criteria.window_s <= 0:
                        continue
                    at = time.time() if now is None else now
                    figures = table.figures(run, at)
                    decision, summary = evaluate(criteria, figures)
                    if decision is None:
                        continue
                    figures["criteria"] = criteria.to_dict()
                    recorded = table.decide(run, decision, figures, summary, at, self.name)
                    if recorded is None:
                        continue  # another replica decided first (or a change ended the run)
                    self.registry.metrics.canary_decisions.labels(run.model, decision).inc()
                    log.warning("model %s: canary %s %s (run %d): %s", run.model, run.candidate,
                                "promoted" if decision == "promote" else "rolled back", run.id, summary)
                    decided.append(recorded)
        except DatabaseUnavailable as exc:
            self.canaries.give_back(taken)
            log.debug("canary analysis skipped: %s", exc)
        return decided
