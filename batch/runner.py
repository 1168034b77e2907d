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


def run_tasks(settings: BatchSettings, task_argv: list[str], *, local_scheduler: bool) -> int:
    """Run a root task given as Luigi command-line words; returns Luigi's retcode (0 = every task complete)."""
    load_config()
    setup_logging(settings.log_level)
    # Luigi's process lock (a second identical run exits with the already_running retcode) lives with the outputs
    # it protects, so runs on different batch directories never block each other.
    locks = settings.batch_dir.resolve() / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    argv = ["--module", "batch.tasks", *task_argv, "--workers", "1", "--lock-pid-dir", str(locks)]
    if local_scheduler:
        argv.append("--local-scheduler")
    else:
        host, port = settings.luigid_host_port
        argv += ["--scheduler-host", host, "--scheduler-port", str(port)]
    tasks.FAILURES.clear()
    try:
        luigi.retcodes.run_with_retcodes(argv)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    for task, reason in tasks.FAILURES:
        print(f"predmesh batch: FAILED {task}: {reason}", file=sys.stderr)
    if code and not tasks.FAILURES:
        hint = "" if local_scheduler else (f" (is the central scheduler running at {settings.luigid}? start it with "
                                           "`predmesh batch scheduler`, or pass --local-scheduler)")
        print(f"predmesh batch: the run did not complete (exit {code}){hint}", file=sys.stderr)
    return code


def run_scheduler(settings: BatchSettings) -> int:
    """luigid in the foreground on PREDMESH_LUIGID_ADDR, state and logs under PREDMESH_LUIGID_DIR, Prometheus
    metrics at /metrics. SIGTERM/SIGINT save the state and stop it."""
    load_config()
    setup_logging(settings.log_level)
    host, port = settings.luigid_host_port
    logdir = settings.luigid_dir / "logs"
    logdir.mkdir(parents=True, exist_ok=True)  # luigid crashes if --logdir is missing
    from luigi.cmdline import luigid
    logging.getLogger("predmesh.batch").info("luigid on http://%s:%d (state %s)", host, port,
                                             settings.luigid_dir / "state.pickle")
    luigid(["--address", host, "--port", str(port), "--logdir", str(logdir),
            "--state-path", str(settings.luigid_dir / "state.pickle")])
    return 0
