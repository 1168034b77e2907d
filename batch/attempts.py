"""One attempt of a batch run, recorded through RecordBatchRun: started RUNNING (the server numbers it 1, 2, ...
per run key), updated while it runs, then finished SUCCEEDED or FAILED. Every attempt is kept, so a failed one is
never replaced by the next. Best effort: a failure to record is reported through `warn`, never fails the work.

While it runs, a heartbeat thread records it again every PREDMESH_BATCH_HEARTBEAT_S (on its own connection, so a
nightly day's attempt outlives the task that started it): a process killed with -9 stops beating, and the server
marks its attempt ABANDONED once it has been silent for PREDMESH_BATCH_RUN_STALE_S."""
from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from batch.scoring import one_line
from predmesh import Client, PredmeshError

MAX_INPUT = 1024  # characters of BatchRun.input the server accepts
# run key -> the attempt this process started and has not finished (Score starts a nightly day's, Report or the
# failure handler finishes it; 0 / absent: the server finishes the key's latest running attempt)
OPEN: dict[str, int] = {}


def input_name(path: Path) -> str:
    """The file an attempt read, as its absolute path (the tail when longer than the server's limit)."""
    text = one_line(str(path.absolute()), limit=1 << 20)
    return text if len(text) <= MAX_INPUT else "…" + text[-(MAX_INPUT - 1):]


class Heartbeat(threading.Thread):
    """Records a running attempt again (its last record) every `every` seconds until stopped."""

    def __init__(self, settings: Any, values: dict[str, Any]):
        super().__init__(name=f"heartbeat {values.get('run_key')}", daemon=True)
        self.settings, self.values = settings, dict(values)
        self._stopped = threading.Event()

    def run(self) -> None:
        s = self.settings
        with Client(s.server, timeout=min(s.timeout_s, s.heartbeat_s * 2), transport="batch",
                    writer_token=s.writer_token or None) as client:
            while not self._stopped.wait(s.heartbeat_s):
                try:
                    client.record_batch_run(**self.values)
                except (PredmeshError, ValueError):
                    pass  # a missed beat: the next one tries again, and the attempt's own records still count

    def stop(self) -> None:
        self._stopped.set()
        if self.is_alive() and self is not threading.current_thread():
            self.join(self.settings.timeout_s)


BEATS: dict[str, Heartbeat] = {}  # run key -> the heartbeat of the attempt this process runs


def stop_heartbeat(run_key: str) -> None:
    beat = BEATS.pop(run_key, None)
    if beat is not None:
        beat.stop()


class Attempt:
    """Records one attempt of run `fields["run_key"]` with the SDK client `client`; with `settings` (the batch
    settings), a started attempt beats (Heartbeat) until it finishes."""

    def __init__(self, client: Any, warn: Callable[[str], None], number: int = 0, settings: Any = None,
                 **fields: Any):
        self.client, self.warn, self.fields, self.settings = client, warn, fields, settings
        self.number = number

    def record(self, status: str, **fields: Any) -> None:
        values = {**self.fields, **fields, "status": status, "attempt": self.number}
        values["message"] = one_line(values.get("message", ""))
        key = values.get("run_key", "")
        if status != "running":
            stop_heartbeat(key)  # first: no beat may reach the server after the attempt's end
        try:
            self.number = self.client.record_batch_run(**values).run.attempt
        except (PredmeshError, ValueError) as exc:
            self.warn(f"attempt {self.number or '(new)'} of run {key} was not recorded: {exc}")
            return
        if status == "running" and self.settings is not None and key:
            beat = BEATS.get(key)
            values["attempt"] = self.number
            if beat is not None and beat.values.get("attempt") == self.number:
                beat.values = values  # the next beat repeats this record
            else:
                stop_heartbeat(key)
                BEATS[key] = Heartbeat(self.settings, values)
                BEATS[key].start()

    def start(self, **fields: Any) -> None:
        """A new attempt, RUNNING (its number is kept for the later records)."""
        self.number = 0
        self.record("running", **fields)

    def finish(self, status: str, **fields: Any) -> None:
        """SUCCEEDED or FAILED: the attempt ends (its heartbeat first); later records would be refused."""
        self.record(status, **fields)
