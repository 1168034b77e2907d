"""The fleet's desired state in the shared database: read at start, polled, changed by the admin calls.

Every replica reads the desired_state table before it serves (its start-up load takes the desired versions) and
every PREDMESH_DESIRED_STATE_POLL_SECONDS after, applying changes through the registry's verified reload (no
downtime: in-flight calls finish on the version they started on). A change made through any replica's admin API
is verified there first (loaded, smoke-tested, swapped in), then recorded with its history entry; the others
follow within one poll interval, and a replica that starts later serves the recorded version from its first call.
While the database cannot be read, a replica keeps serving what it serves.
"""
from __future__ import annotations

import logging
import socket
import threading
import time

from database import canary as canary_table
from database import desired as table
from database.connect import DatabaseUnavailable, session
from database.desired import Desired, NoPreviousVersion
from inference import errors
from inference.bounds import check_name, shown
from inference.models.canary import Criteria
from inference.models.desired import DesiredVersions
from inference.models.registry import ModelRegistry
from inference.process.canary import CanaryFollower

log = logging.getLogger(__name__)


class FleetState:
    """This replica's view of the desired state, its poller, and the changes the admin API makes."""

    def __init__(self, registry: ModelRegistry, interval: float, name: str = ""):
        self.registry = registry
        self.versions = DesiredVersions(registry)
        self.interval = max(0.05, interval)
        self.name = name or socket.gethostname()
        self.canary = CanaryFollower(registry, self.name)  # canary candidates, tallies and decisions
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="desired-state", daemon=True)
        self._unreadable = False  # the last read failed (logged once per outage)
        # a poll (read, then apply) and an admin change one after the other: a poll that read the table before a
        # change must not apply its older state after it
        self._lock = threading.RLock()

    # -- reading ---------------------------------------------------------------------------------------------
    def read(self) -> dict[str, Desired] | None:
        """Every model's desired state from the database; None (logged once per outage) when it cannot be read."""
        try:
            with session():
                found = table.all_desired()
        except DatabaseUnavailable as exc:
            self.registry.metrics.desired_reads.labels("failure").inc()
            if not self._unreadable:
                log.warning("desired state unreadable (%s): serving what this replica serves until it returns",
                            exc)
            self._unreadable = True
            return None
        self.registry.metrics.desired_reads.labels("success").inc()
        if self._unreadable:
            log.info("desired state readable again")
        self._unreadable = False
        return found

    def preload(self) -> dict[str, str]:
        """Before the start-up load: the versions to load first (empty when the database cannot be read)."""
        found = self.read()
        if found is None:
            return {}
        self.versions._desired = dict(found)
        for model, wanted in found.items():
            self.registry.metrics.desired(model, wanted.version)
        return {model: d.version for model, d in found.items()}

    def poll(self, counted: bool = True) -> None:
        with self._lock:
            found = self.read()
            if found is not None:
                self.versions.apply(found, counted=counted)
                self.canary.follow(found)
                for recorded in self.canary.analyse():  # a canary decided here: applied now, the others poll it
                    self.versions.set(recorded)
                    self.canary.follow_one(recorded)

    def start(self) -> None:
        """Converge once (part of the start-up load), then poll in the background until stop()."""
        self.versions.apply(self.versions._desired, counted=False)
        self.canary.follow(self.versions._desired)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.poll()
            except Exception:  # never let the poller die: a later poll may succeed
                log.exception("applying the desired state failed")

    # -- changing ----------------------------------------------------------------------------------------------
    def desired(self, model: str) -> Desired | None:
        """The desired state as this replica last read it."""
        return self.versions.get(model)

    def fresh(self, model: str) -> Desired | None:
        """The desired state in the database now (UNAVAILABLE when it cannot be read)."""
        try:
            with session():
                return table.get_desired(check_name("model", model))
        except DatabaseUnavailable as exc:
            raise errors.StorageUnavailable(f"the desired state cannot be read: {exc}") from None

    def canaries(self, model: str, limit: int = 10) -> list[tuple[canary_table.Run, dict]]:
        """The model's newest canary runs, newest first, each with its figures: the running one's now, the others'
        as recorded at their decision (UNAVAILABLE when the database cannot be read)."""
        try:
            with session():
                runs = canary_table.runs(check_name("model", model), limit)
                return [(run, canary_table.figures(run, time.time()) if run.status == canary_table.RUNNING
                         else run.figures) for run in runs]
        except DatabaseUnavailable as exc:
            raise errors.StorageUnavailable(f"the canaries cannot be read: {exc}") from None

    def change(self, model: str, version: str, action: str, *, pinned: bool = False, by: str = "",
               reason: str = "", candidate: str = "", candidate_share: float = 0.0,
               criteria: Criteria | None = None) -> tuple[Desired, str]:
        """Verify version here (load, smoke test, swap in), then record it for the fleet; returns (the recorded
        desired state, the version it replaces). A version that cannot serve is refused and nothing is recorded;
        when the database does not take the change, this replica goes back to what it served (UNAVAILABLE)."""
        with self._lock:
            return self._change(model, version, action, pinned=pinned, by=by, reason=reason, candidate=candidate,
                                candidate_share=candidate_share, criteria=criteria)

    def _change(self, model: str, version: str, action: str, *, pinned: bool, by: str, reason: str,
                candidate: str, candidate_share: float, criteria: Criteria | None = None) -> tuple[Desired, str]:
        check_name("model", model)
        if not version:
            raise errors.InvalidArgument("version is empty; name the stored version every replica should serve")
        if candidate_share and not 0.0 <= candidate_share <= 1.0:
            raise errors.InvalidArgument(f"candidate_share {candidate_share!r} must be between 0 and 1")
        if candidate_share and not candidate:
            raise errors.InvalidArgument("candidate_share needs a candidate version")
        if candidate and not candidate_share:  # it would take no call, and be rolled back for want of evidence
            raise errors.InvalidArgument(f"candidate {shown(candidate)} needs a candidate_share above 0 (the share "
                                         "of the calls it takes, at most 1)")
        if candidate and candidate not in self.registry.store.versions(model):
            raise errors.InvalidArgument(f"candidate version {shown(candidate)} of {model!r} is not in the "
                                         "model store")
        if candidate and candidate == version:
            raise errors.InvalidArgument(f"candidate {shown(candidate)} is the version to serve; name another one")
        if criteria is not None:
            if not candidate:
                raise errors.InvalidArgument("canary criteria need a candidate version")
            try:
                criteria.check()
            except ValueError as exc:
                raise errors.InvalidArgument(f"canary criteria: {exc}") from None
        _, served = self.registry.reload(model, version)  # ReloadFailed / NotFound: nothing recorded
        if candidate:  # loaded and smoke-tested here before anything is recorded
            self.registry.canaries.hold(model, candidate, candidate_share)
        try:
            with session():
                recorded = canary_table.record_change(
                    model, version, action, time.time(), serving=served, pinned=pinned, candidate=candidate,
                    candidate_share=candidate_share, by=by or self.name, reason=reason,
                    criteria=criteria.to_dict() if criteria is not None else None)
        except DatabaseUnavailable as exc:
            self.canary.follow_one(self.versions.get(model) or Desired(model, served))
            if served and served != version:
                try:
                    self.registry.reload(model, served)
                except errors.PredmeshError:
                    log.exception("model %s: going back to version %s failed", model, served)
            raise errors.StorageUnavailable(f"the desired state was not recorded (the database did not take it: "
                                            f"{exc}); nothing changed") from None
        previous = self.versions.get(model)
        self.versions.set(recorded)
        self.canary.follow_one(recorded)
        log.info("model %s: desired version %s recorded (%s by %s%s); was %s", model, version, action,
                 recorded.updated_by, f": {reason}" if reason else "",
                 previous.version if previous else f"{served or 'none'} (newest stored)")
        return recorded, previous.version if previous else served

    def rollback(self, model: str, *, by: str = "", reason: str = "") -> tuple[Desired, str]:
        """Back to the version that served before the current desired one (from the recorded history)."""
        check_name("model", model)
        try:
            with session():
                target = table.rollback_target(model)
        except DatabaseUnavailable as exc:
            raise errors.StorageUnavailable(f"the desired state cannot be read: {exc}") from None
        except NoPreviousVersion as exc:
            raise errors.FailedPrecondition(f"nothing to roll back to: {exc}") from None
        return self.change(model, target, "rollback", by=by, reason=reason)
