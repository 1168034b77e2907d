"""luigid as `predmesh batch scheduler` runs it: Luigi's own server, with its state saved whenever a task's state
changes (written to a temporary file, fsynced and renamed: a kill -9 at any moment leaves the last complete state)
instead of only at a clean stop, and its task history recorded (Luigi's db_task_history: SQLite in the state
directory by default, or the database PREDMESH_LUIGID_HISTORY_DB names) so the visualiser's history pages answer."""
from __future__ import annotations

import logging
import os
import pickle
import threading
from pathlib import Path

import luigi.configuration
import luigi.scheduler

from predmesh.env import redact
from predmesh.startup import StartupError

log = logging.getLogger("predmesh.batch")

# the scheduler calls after which a task's state may have changed (what a restart must not lose)
_CHANGES = ("add_task", "get_work", "set_task_status_message", "set_task_progress_percentage", "add_worker",
            "disable_worker", "set_worker_processes", "send_scheduler_message", "add_scheduler_message_response",
            "forgive_failures", "mark_as_done", "re_enable_task")


class DurableScheduler(luigi.scheduler.Scheduler):
    """A Luigi Scheduler that saves its state atomically after every call that can change it, and gives a task it
    disabled for its failures back to a new run: luigid disables a task once it failed its run and its retries
    (DayTask.retry_count), which stops the worker kept alive for those retries, but Luigi keeps it disabled for
    `disable_persist` (a day) against every later worker too, so a nightly rerun after the cause was fixed (the
    server back, the worker that was killed replaced) was refused ("not granted run permission", exit 25) for up
    to a day. A worker adds a task as PENDING only while it schedules a run (the run that failed it reports FAILED
    and then only asks for work), so such an add is a new run: the task's failures are forgotten and it runs, as
    it would with --local-scheduler."""

    _lock = threading.Lock()

    def add_task(self, task_id=None, status=luigi.scheduler.PENDING, worker=None, **kwargs):
        task = self._state.get_task(task_id) if task_id is not None else None
        if (task is not None and status == luigi.scheduler.PENDING and task.status == luigi.scheduler.DISABLED
                and task.scheduler_disable_time is not None):
            log.info("luigid: %s was disabled after its failures; a new run (worker %s) tries it again", task_id,
                     worker)
            self._state.re_enable(task)  # failures and disable time cleared; the base call sets it PENDING
        return super().add_task(task_id=task_id, status=status, worker=worker, **kwargs)

    def dump(self) -> None:
        state = self._state
        path = Path(state._state_path)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with self._lock:
                with open(tmp, "wb") as f:
                    pickle.dump(state.get_state(), f)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
        except OSError as exc:
            log.warning("could not save the scheduler state to %s: %s", path, exc)
            tmp.unlink(missing_ok=True)


def _saving(name: str):
    base = DurableScheduler.__dict__.get(name) or getattr(luigi.scheduler.Scheduler, name)  # its own, if any

    def call(self, *args, **kwargs):
        result = base(self, *args, **kwargs)
        self.dump()
        return result

    call.__name__ = name
    call.__doc__ = base.__doc__
    return call


for _name in _CHANGES:
    if hasattr(luigi.scheduler.Scheduler, _name):
        setattr(DurableScheduler, _name, _saving(_name))


def history_url(luigid_dir: Path, configured: str) -> str:
    """The task history database: PREDMESH_LUIGID_HISTORY_DB when set, else SQLite in the state directory."""
    return configured or f"sqlite:///{(luigid_dir / 'history.sqlite').resolve()}"


def serve(host: str, port: int, luigid_dir: Path, history: str) -> None:
    """Run luigid in the foreground until SIGTERM/SIGINT (which save the state and stop it)."""
    import luigi.server
    config = luigi.configuration.get_config()
    config.set("scheduler", "state_path", str(luigid_dir / "state.pickle"))
    config.set("scheduler", "record_task_history", "true")
    config.set("task_history", "db_connection", history.replace("%", "%%"))
    try:  # opens the task history: a database that does not answer, or a driver not installed, was a traceback
        scheduler = DurableScheduler()
    except Exception as exc:  # whatever SQLAlchemy or the driver raise, said in one line
        reason = " ".join(str(exc).split()) or "no detail"
        raise StartupError(f"luigid's task history {redact(history)} cannot be opened ({type(exc).__name__}: "
                           f"{reason[:300]}); fix PREDMESH_LUIGID_HISTORY_DB, or unset it for SQLite in "
                           "PREDMESH_LUIGID_DIR") from None
    luigi.server.run(api_port=port, address=host, scheduler=scheduler)
