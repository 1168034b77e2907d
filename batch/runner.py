"""Run the pipeline's Luigi tasks with Luigi's own retcodes (batch/luigi.cfg), against the local scheduler or the
central one (luigid), and run luigid itself."""
from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path

import luigi
import luigi.configuration
import luigi.retcodes

from batch import tasks
from batch.settings import BatchSettings
from predmesh.startup import StartupError, check_bindable, make_directory

CONFIG = Path(__file__).with_name("luigi.cfg")
_loaded = False


def load_config() -> None:
    """Our luigi.cfg, then the user's LUIGI_CONFIG_PATH again so that it keeps the last word."""
    global _loaded
    if _loaded:
        return
    # [core] rpc-retry-* are read by luigi's RPC client straight from the configuration; luigi's `core` task
    # nevertheless warns that it does not consume them
    warnings.filterwarnings("ignore", message=r".*parameter 'rpc_retry_\w+'", category=UserWarning)
    luigi.configuration.add_config_path(str(CONFIG))
    user = os.environ.get("LUIGI_CONFIG_PATH")
    if user:
        luigi.configuration.add_config_path(user)
    _loaded = True


class _Brief(logging.Filter):
    """Below DEBUG, a logged exception is its one-line summary, not a traceback (the reason is what matters)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            record.msg = f"{record.getMessage()}: {type(exc).__name__}: {exc}"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    if level != "DEBUG":
        handler.addFilter(_Brief())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # luigid's web server logs every request it answers at INFO: under `predmesh up`, Prometheus' scrape of its
    # /metrics put a line on the operator's terminal every 5 s, for ever, and each worker call another. Below
    # DEBUG only the failed ones (4xx at WARNING, 5xx at ERROR, as tornado logs them) are shown.
    logging.getLogger("tornado.access").setLevel("DEBUG" if level == "DEBUG" else "WARNING")


def run_tasks(settings: BatchSettings, task_argv: list[str], *, local_scheduler: bool) -> int:
    """Run a root task given as Luigi command-line words; returns Luigi's retcode (0 = every task complete)."""
    load_config()
    setup_logging(settings.log_level)
    # Luigi's process lock (a second identical run exits with the already_running retcode) lives with the outputs
    # it protects, so runs on different batch directories never block each other.
    locks = make_directory(settings.batch_dir.resolve() / ".locks", "PREDMESH_BATCH_DIR")
    argv = ["--module", "batch.tasks", *task_argv, "--workers", "1", "--lock-pid-dir", str(locks)]
    if settings.task_retries:  # the worker waits for the scheduler to hand a failed task back (retry_delay)
        argv += ["--worker-keep-alive", "--worker-max-keep-alive-idle-duration", "1 hour"]
        if local_scheduler:
            luigi.configuration.get_config().set("scheduler", "retry_delay", repr(settings.task_retry_delay_s))
    if local_scheduler:
        return _run(settings, [*argv, "--local-scheduler"], locks, local_scheduler=True)
    host, port = settings.luigid_host_port
    code = _run(settings, [*argv, "--scheduler-host", host, "--scheduler-port", str(port)], locks,
                local_scheduler=False, quiet=True)
    if code == luigi.retcodes.retcode().unhandled_exception and not answers(host, port):
        # luigid went away (killed) during the run: its worker stops at its next call to it. What is done stays
        # done (every output is atomic, every row idempotent); the rest is finished here with the local scheduler
        # (this process holds the run's lock already).
        tasks.FAILURES[:] = [f for f in tasks.FAILURES if "remote scheduler" not in f[1]]
        print(f"predmesh batch: the central scheduler at {settings.luigid} stopped answering during the run; "
              "finishing the run with the local scheduler", file=sys.stderr)
        return _run(settings, [*argv, "--local-scheduler", "--no-lock"], locks, local_scheduler=True)
    _report(code, settings, locks, local_scheduler=False)
    return code


def _run(settings: BatchSettings, argv: list[str], locks: Path, *, local_scheduler: bool,
         quiet: bool = False) -> int:
    """Luigi's retcode for these words; unless quiet, the failures and a hint are printed."""
    tasks.FAILURES.clear()
    try:
        luigi.retcodes.run_with_retcodes(argv)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    if not quiet:
        _report(code, settings, locks, local_scheduler=local_scheduler)
    return code


def _report(code: int, settings: BatchSettings, locks: Path, *, local_scheduler: bool) -> None:
    """The failed tasks (each once, with its last reason; none when a task retry made the run complete) and why
    a run without a failed task did not complete."""
    if code:
        for task, reason in dict(tasks.FAILURES).items():
            print(f"predmesh batch: FAILED {task}: {reason}", file=sys.stderr)
    if code and not tasks.FAILURES:
        hint = _hint(code, luigi.retcodes.retcode(), settings, locks, local_scheduler)
        print(f"predmesh batch: the run did not complete (exit {code}){hint}", file=sys.stderr)


def answers(host: str, port: int, timeout: float = 2.0) -> bool:
    """Whether something accepts connections at host:port (the central scheduler)."""
    import socket
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError:
        return False
    return True


def _hint(code: int, retcodes, settings: BatchSettings, locks: Path, local_scheduler: bool) -> str:
    """Why a run that failed no task did not complete, as far as this process can tell."""
    if code == retcodes.already_running:
        holders = lock_holders(locks)
        if holders:
            return (f": another run of the same command holds its lock (pid {', '.join(map(str, holders))}; lock "
                    f"files in {locks}); wait for it to finish")
        if not local_scheduler:
            return (f": the central scheduler at {settings.luigid} says another worker is running one of its tasks; "
                    "wait for it to finish")
        return ": another run of the same command holds its lock"
    if local_scheduler:
        return ""
    if code == retcodes.unhandled_exception:
        return (f" (the central scheduler at {settings.luigid} stopped answering? rerun: completed tasks are not "
                "run again)")
    if answers(*settings.luigid_host_port):
        return (f" (the central scheduler at {settings.luigid} did not let this run have a task: its visualiser, "
                f"http://{settings.luigid}/static/visualiser/index.html, shows which and why, e.g. disabled there)")
    return (f" (is the central scheduler running at {settings.luigid}? start it with `predmesh batch scheduler`, "
            "or pass --local-scheduler)")


def lock_holders(locks: Path) -> list[int]:
    """The live processes that hold Luigi's lock for this process's command line (luigi.lock's rule)."""
    import luigi.lock
    _, command, pid_file = luigi.lock.get_info(str(locks))
    try:
        pids = {int(p) for p in Path(pid_file).read_text().split() if p.strip().isdigit()}
    except OSError:
        return []
    return sorted(p for p in pids if p != os.getpid() and luigi.lock.getpcmd(p) == command)


def run_scheduler(settings: BatchSettings) -> int:
    """luigid in the foreground on PREDMESH_LUIGID_ADDR, its state (saved on every change) and task history under
    PREDMESH_LUIGID_DIR (or the history in PREDMESH_LUIGID_HISTORY_DB), Prometheus metrics at /metrics.
    SIGTERM/SIGINT save the state and stop it."""
    from batch import luigid
    load_config()
    setup_logging(settings.log_level)
    host, port = settings.luigid_host_port
    try:  # one line, not a traceback, when another process holds it
        check_bindable(f"{host}:{port}", "luigid address PREDMESH_LUIGID_ADDR")
    except StartupError as exc:
        print(f"predmesh batch scheduler: {exc}", file=sys.stderr)
        return 1
    make_directory(settings.luigid_dir, "PREDMESH_LUIGID_DIR")
    history = luigid.history_url(settings.luigid_dir, settings.luigid_history)
    shown = history if not settings.luigid_history else history.split("@")[-1]  # never a password
    logging.getLogger("predmesh.batch").info("luigid on http://%s:%d (state %s, task history %s)", host, port,
                                             settings.luigid_dir / "state.pickle", shown)
    luigid.serve(host, port, settings.luigid_dir, history)
    return 0
