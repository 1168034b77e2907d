"""One attempt of a batch run, recorded through RecordBatchRun: started RUNNING (the server numbers it 1, 2, ...
per run key), updated while it runs, then finished SUCCEEDED or FAILED. Every attempt is kept, so a failed one is
never replaced by the next. Best effort: a failure to record is reported through `warn`, never fails the work."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from batch.scoring import one_line
from predmesh import PredmeshError

MAX_INPUT = 1024  # characters of BatchRun.input the server accepts
# run key -> the attempt this process started and has not finished (Score starts a nightly day's, Report or the
# failure handler finishes it; 0 / absent: the server finishes the key's latest running attempt)
OPEN: dict[str, int] = {}


def input_name(path: Path) -> str:
    """The file an attempt read, as its absolute path (the tail when longer than the server's limit)."""
    text = one_line(str(path.absolute()), limit=1 << 20)
    return text if len(text) <= MAX_INPUT else "…" + text[-(MAX_INPUT - 1):]


class Attempt:
    """Records one attempt of run `fields["run_key"]` with the SDK client `client`."""

    def __init__(self, client: Any, warn: Callable[[str], None], number: int = 0, **fields: Any):
        self.client, self.warn, self.fields = client, warn, fields
        self.number = number

    def record(self, status: str, **fields: Any) -> None:
        values = {**self.fields, **fields, "status": status, "attempt": self.number}
        values["message"] = one_line(values.get("message", ""))
        try:
            self.number = self.client.record_batch_run(**values).run.attempt
        except (PredmeshError, ValueError) as exc:
            self.warn(f"attempt {self.number or '(new)'} of run {values.get('run_key')} was not recorded: {exc}")

    def start(self, **fields: Any) -> None:
        """A new attempt, RUNNING (its number is kept for the later records)."""
        self.number = 0
        self.record("running", **fields)

    def finish(self, status: str, **fields: Any) -> None:
        """SUCCEEDED or FAILED: the attempt ends; later records would be refused."""
        self.record(status, **fields)
