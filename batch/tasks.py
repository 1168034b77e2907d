"""The nightly pipeline as Luigi tasks: GenerateData(date, model, rows) → Score → Report, one directory per day
(<PREDMESH_BATCH_DIR>/nightly/<model>/<date>/). Every output is written through a temporary path and renamed,
so a killed task leaves no output and a completed day is a no-op; RangeDailyBase over Report backfills days.

Settings come from BatchSettings(), a luigi.Config: luigi.cfg's [BatchSettings], with the PREDMESH_* variables
the entry point (batch.cli) wrote over it."""
from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from datetime import date as Date
from pathlib import Path

import luigi
from luigi.rpc import RPCError
from luigi.tools.range import RangeDailyBase  # noqa: F401 -- the backfill's root task, registered by this import

from batch import report as reports
from batch.attempts import OPEN, Attempt, input_name
from batch.scorefile import read_outcome, score_file, write_outcome
from batch.scoring import Clients, ScoringFailed, describe
from batch.settings import BatchSettings
from batch.synth import TRUE_LABEL, synthesize
from batch.table import InputError, read_table, remove_stale_temporaries, write_csv
from predmesh import PredmeshError

log = logging.getLogger("predmesh.batch")
FAILURES: list[tuple[str, str]] = []  # (task, reason) of the tasks that failed in this process


OUTPUT_NAMES = ("input.csv", "scored.csv", "rejects.csv", "score.json", "report.json", "report.png")


def day_dir(model: str, day: Date) -> Path:
    return BatchSettings().batch_dir / "nightly" / model / day.isoformat()


def clean_days(model: str, days) -> int:
    """Remove the stale temporaries of our outputs in these days' directories (also of a completed day, whose
    tasks do not run again); returns how many were removed."""
    removed = 0
    for day in days:
        removed += len(remove_stale_temporaries(day_dir(model, day), OUTPUT_NAMES))
    if removed:
        log.info("removed %d stale temporary file(s) left by killed runs", removed)
    return removed


def run_key(model: str, day: Date) -> str:
    return f"nightly/{model}/{day.isoformat()}"


class Progress:
    """Reports scoring progress to the terminal (tqdm, when stderr is a terminal) and to Luigi's scheduler
    (progress percentage and status message, at most twice a second)."""

    def __init__(self, task: luigi.Task, what: str):
        from tqdm import tqdm
        self.task, self.what = task, what
        self.bar = tqdm(desc=what, unit="rows", disable=None, leave=False)
        self._sent = 0.0
        self._scheduler = True

    def __call__(self, done: int, total: int) -> None:
        if self.bar.total != total:
            self.bar.reset(total=total)
        self.bar.update(done - self.bar.n)
        now = time.monotonic()
        if self._scheduler and (now - self._sent >= 0.5 or done == total):
            self._sent = now
            # the luigi worker running the task sets these two (a task run by hand has None); they are calls to
            # the scheduler, which may be gone (luigid killed): that stops the reports, never the work
            try:
                if self.task.set_progress_percentage is not None:
                    self.task.set_progress_percentage(round(100 * done / total) if total else 100)
                if self.task.set_status_message is not None:
                    self.task.set_status_message(f"{self.what}: {done} of {total} rows")
            except RPCError as exc:
                self._scheduler = False
                log.warning("the scheduler does not take progress reports any more (%s); scoring goes on", exc)

    def close(self) -> None:
        self.bar.close()


def day_attempt(clients: Clients, task: DayTask, number: int = 0) -> Attempt:
    """An attempt of the task's day (run key nightly/<model>/<date>)."""
    def warn(why: str) -> None:
        log.warning("could not record batch run: %s", why)
    return Attempt(clients.first, warn, number, BatchSettings(), run_key=run_key(task.model, task.date),
                   kind="nightly", model=task.model, run_date=task.date.isoformat())


class DayTask(luigi.Task):
    """A task for one model and day."""

    date = luigi.DateParameter()
    model = luigi.Parameter(default="iris")
    rows = luigi.IntParameter(default=10_000, significant=False)  # the first run of a day fixes its rows
    disable_window = 24 * 3600  # failures counted over a day

    @property
    def retry_count(self) -> int:
        """Failures before the scheduler disables the task: the first run and PREDMESH_BATCH_TASK_RETRIES more
        (the worker stays alive for them; see batch.runner)."""
        return BatchSettings().task_retries + 1

    def dir(self) -> Path:
        return day_dir(self.model, self.date)


class GenerateData(DayTask):
    """Synthetic rows with their true label, from the model's training distribution, seeded by day and model."""

    def output(self):
        return luigi.LocalTarget(str(self.dir() / "input.csv"))

    def run(self):
        remove_stale_temporaries(self.dir(), OUTPUT_NAMES)
        with Clients(BatchSettings()) as clients:
            try:
                info = clients.first.get_model(self.model)
            except PredmeshError as exc:
                raise ScoringFailed(describe(exc, BatchSettings().server)) from None
        header, rows = synthesize(info, self.date, self.rows)
        write_csv(self.output(), header, rows)


class Score(DayTask):
    """Score the day's rows through the server (transport "batch"); rejects (if any) go to rejects.csv."""

    def requires(self):
        return GenerateData(date=self.date, model=self.model, rows=self.rows)

    def output(self):
        d = self.dir()
        return {"scored": luigi.LocalTarget(str(d / "scored.csv")),
                "rejects": luigi.LocalTarget(str(d / "rejects.csv")),
                "summary": luigi.LocalTarget(str(d / "score.json"))}

    def run(self):
        remove_stale_temporaries(self.dir(), OUTPUT_NAMES)
        out = self.output()
        started = datetime.now(UTC)
        with Clients(BatchSettings()) as clients:
            key = run_key(self.model, self.date)
            attempt = day_attempt(clients, self)
            attempt.start(message="scoring", started_at=started, input=input_name(Path(self.input().path)))
            OPEN[key] = attempt.number
            progress = Progress(self, f"score {self.model} {self.date}")
            try:
                outcome = score_file(clients, self.model, Path(self.input().path), out["scored"], out["rejects"],
                                     progress=progress)
            except PredmeshError as exc:
                raise ScoringFailed(describe(exc, BatchSettings().server)) from None
            finally:
                progress.close()
            write_outcome(out["summary"], outcome)  # last: its presence means the day is scored
            attempt.record("running", model_version=outcome.model_version, rows=outcome.scored,
                           rejected=outcome.rejected, duration_seconds=outcome.seconds, message=outcome.summary())
        log.info("%s", outcome.summary())


class Report(DayTask):
    """Quality of the day against its known labels (JSON + PNG); the labels go back to the server as feedback."""

    def requires(self):
        return Score(date=self.date, model=self.model, rows=self.rows)

    def output(self):
        d = self.dir()
        return {"json": luigi.LocalTarget(str(d / "report.json")), "png": luigi.LocalTarget(str(d / "report.png"))}

    def run(self):
        started = time.perf_counter()
        report_started = None if run_key(self.model, self.date) in OPEN else datetime.now(UTC)
        remove_stale_temporaries(self.dir(), OUTPUT_NAMES)
        scored = read_table(Path(self.input()["scored"].path))
        outcome = read_outcome(Path(self.input()["summary"].path))
        cols = scored.columns
        if TRUE_LABEL not in cols:
            raise InputError(f"{self.input()['scored'].path} has no {TRUE_LABEL} column")
        t, p, i = cols.index(TRUE_LABEL), cols.index("label"), cols.index("prediction_id")
        true = [r[t] for r in scored.rows]
        predicted = [r[p] for r in scored.rows]
        classes = [c.removeprefix("prob_") for c in cols if c.startswith("prob_")]
        result = reports.metrics(true, predicted, classes)
        with Clients(BatchSettings()) as clients:
            if self.set_status_message is not None:  # a luigi worker sets it; None when run() is called directly
                try:
                    self.set_status_message("sending the known labels as feedback")
                except RPCError as exc:  # the scheduler is gone: the work goes on
                    log.warning("the scheduler does not take status messages (%s)", exc)
            feedback = send_feedback(clients, {r[i]: r[t] for r in scored.rows}, BatchSettings().feedback_wait_s)
            result.update(date=self.date.isoformat(), model=self.model, model_version=outcome.model_version,
                          rejected=outcome.rejected, feedback=feedback)
            reports.write_chart(self.output()["png"], result,
                                f"{self.model}@{outcome.model_version} on {self.date} ({result['rows']} rows)")
            reports.write_json(self.output()["json"], result)
            # finishes the attempt Score started in this process, else the day's latest running one, else a new one
            attempt = day_attempt(clients, self, OPEN.pop(run_key(self.model, self.date), 0))
            attempt.finish("succeeded", model_version=outcome.model_version, rows=outcome.scored,
                           rejected=outcome.rejected, accuracy=result["accuracy"], started_at=report_started,
                           duration_seconds=outcome.seconds + time.perf_counter() - started,
                           message=f"{outcome.summary()}; accuracy {result['accuracy']:.4f}, macro precision "
                                   f"{result['macro_precision']:.4f}, macro recall {result['macro_recall']:.4f}")


def send_feedback(clients: Clients, labels: dict[str, str], wait_s: float) -> dict:
    """SubmitFeedbackBatch in pages of PREDMESH_BATCH_FEEDBACK_PAGE labels, each call bounded by
    PREDMESH_BATCH_FEEDBACK_TIMEOUT_S and retried when transient (batch.retry); ids the server has not stored yet
    are sent again (with backoff) for up to wait_s seconds, then reported as not recorded. A call that still fails
    fails the task with its status and message (the day's scored output stays; a rerun sends the feedback only).
    Returns recorded / correct / not_found counts."""
    settings = clients.settings
    page = settings.feedback_page
    pending = dict(labels)
    recorded = correct = 0
    deadline = time.monotonic() + wait_s
    delay = 0.2
    while True:
        missing: dict[str, str] = {}
        items = list(pending.items())
        for start in range(0, len(items), page):
            try:
                answer = clients.first.submit_feedback_batch(items[start:start + page],
                                                             timeout=settings.feedback_timeout_s)
            except PredmeshError as exc:
                raise ScoringFailed(f"feedback of labels {start + 1}-{min(start + page, len(items))} of "
                                    f"{len(items)} failed: {describe(exc, settings.server)}") from None
            recorded += answer.recorded
            correct += answer.correct
            missing.update((pid, pending[pid]) for pid in answer.not_found)
        if not missing or time.monotonic() + delay > deadline:
            break
        time.sleep(delay)
        delay = min(delay * 2, 2.0)
        pending = missing
    if missing:
        log.warning("%d predictions were still not stored after %.0fs; their feedback was not recorded",
                    len(missing), wait_s)
    return {"recorded": recorded, "correct": correct, "not_found": len(missing)}


@luigi.Task.event_handler(luigi.Event.FAILURE)
def _on_failure(task: luigi.Task, exception: BaseException) -> None:
    """Remember the reason (printed by the entry point) and record the failed run."""
    reason = str(exception) or type(exception).__name__
    FAILURES.append((str(task), reason))
    if isinstance(task, DayTask):
        with Clients(BatchSettings()) as clients:
            day_attempt(clients, task, OPEN.pop(run_key(task.model, task.date), 0)).finish(
                "failed", message=f"{task.get_task_family()} failed: {reason}")
