"""`predmesh batch <command>` (= `python -m batch <command>`): score a file, run or backfill the nightly pipeline,
run the central scheduler, print the crontab line, list recorded runs."""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from predmesh import faults
from predmesh.env import ConfigError, env_epilog, variables_read
from predmesh.startup import StartupError

# Exit codes of `predmesh batch score` (nightly/backfill exit with Luigi's retcodes from batch/luigi.cfg).
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_REJECTS, EXIT_NOT_STORED = 0, 1, 2, 3, 4

EPILOG = """exit codes:
  score            0 every row scored; 3 scored, but some rows were rejected (see the rejects file);
                   2 bad usage, an unusable input file, or an output that cannot be written (checked before
                   any row is scored); 1 the run failed (server unreachable or refused it); 4 (with
                   --wait-stored) scored, but not every row was queryable in the database in time
  nightly/backfill 0 every task complete (or already done); 30 a task failed (the reason is printed);
                   10 the same run is already going; 25 not run; 35 scheduling error; 40 unexpected error
"""


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return value


def yesterday() -> date:
    return datetime.now(UTC).date() - timedelta(days=1)


def parser() -> argparse.ArgumentParser:
    from batch.settings import BatchSettings  # imports luigi: not at module import

    p = argparse.ArgumentParser(prog="predmesh batch", description=__doc__, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("score", help="score a CSV (or Parquet) file of feature rows",
                       description="score a CSV (or Parquet) file of feature rows",
                       epilog=env_epilog(variables_read(BatchSettings.from_env)),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("--model", required=True)
    s.add_argument("--input", required=True, type=Path, help="CSV or .parquet with one column per feature")
    s.add_argument("--output", type=Path, help="default: <input>.scored.<ext>; a new path or a regular file (a "
                   "symlink is written through), in an existing writable directory")
    s.add_argument("--rejects", type=Path, help="default: <output>.rejects.csv; the same rule, and not the output")
    s.add_argument("--map", action="append", default=[], metavar="FEATURE=COLUMN",
                   help="read the model's FEATURE from the input's COLUMN (repeatable); unmapped features are read "
                        "from the column of their own name")
    s.add_argument("--map-file", type=Path, metavar="FILE",
                   help="mappings as a CSV file with the header feature,column and one line per feature")
    s.add_argument("--wait-stored", action="store_true",
                   help="before exiting, wait (up to PREDMESH_BATCH_WAIT_STORED_S) until every scored row is "
                        "queryable in the server's database")

    def day_options(q, what: str):
        q.add_argument("--model", help="default: PREDMESH_BATCH_MODEL")
        q.add_argument("--rows", type=_positive, help="synthetic rows per day (default: PREDMESH_BATCH_ROWS)")
        q.add_argument("--local-scheduler", action="store_true",
                       help=f"run {what} in this process without luigid (default: the central scheduler at "
                            "PREDMESH_LUIGID_ADDR)")

    n = sub.add_parser("nightly", help="GenerateData → Score → Report for one day (a completed day is a no-op)")
    n.add_argument("--date", type=_day, help="the day (default: yesterday, UTC)")
    day_options(n, "the day")

    b = sub.add_parser("backfill", help="run every missing day in [start, stop) (RangeDailyBase over Report)")
    b.add_argument("--start", type=_day, help="first day (default: --days-back days before stop)")
    b.add_argument("--stop", type=_day, help="day after the last one (default: today, UTC, so up to yesterday)")
    b.add_argument("--days-back", type=_positive, default=7, help="window when --start is not given (default 7)")
    day_options(b, "the days")

    sub.add_parser("scheduler", help="run luigid on PREDMESH_LUIGID_ADDR (state and task history under "
                                     "PREDMESH_LUIGID_DIR)")

    c = sub.add_parser("crontab", help="print the crontab line that runs the nightly backfill")
    c.add_argument("--schedule", default="15 2 * * *", help="cron schedule (default: 02:15 every day)")

    r = sub.add_parser("runs", help="list recorded batch runs, every attempt, newest first")
    r.add_argument("--model", default="")
    r.add_argument("--kind", default="")
    r.add_argument("--key", default="", help="only the attempts of this run key")
    r.add_argument("--limit", type=_positive, default=20)
    r.add_argument("--json", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    from batch.runner import load_config
    from batch.settings import BatchSettings
    load_config()  # first: the PREDMESH_* variables are written over luigi.cfg's [BatchSettings]
    try:
        settings = BatchSettings.from_env(os.environ)
        faults.configure(os.environ.get(faults.ENV, ""))  # fault injection for the fault tests; off when unset
    except ConfigError as exc:
        print(f"predmesh batch: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return COMMANDS[args.command](settings, args)
    except StartupError as exc:  # e.g. a directory a setting names cannot be created
        print(f"predmesh batch {args.command}: {exc}", file=sys.stderr)
        return EXIT_FAILED


def cmd_score(settings, args) -> int:
    import time

    from tqdm import tqdm

    from batch.attempts import Attempt, input_name
    from batch.mapping import build
    from batch.outputs import OutputError, check_outputs
    from batch.runner import setup_logging
    from batch.scorefile import default_output, default_rejects, score_file
    from batch.scoring import Clients, ScoringFailed, describe, one_line
    from batch.stored import Expected, now, wait_stored, window_start
    from batch.table import InputError, content_hash
    from predmesh import PredmeshError

    setup_logging(settings.log_level)
    try:
        mapping = build(args.map, args.map_file)
    except InputError as exc:
        print(f"predmesh batch score: {exc}", file=sys.stderr)
        return EXIT_USAGE
    output = args.output or default_output(args.input)
    rejects = args.rejects or default_rejects(output)
    try:  # before any row is scored: what would fail (or destroy something) at the end fails now
        output_file, rejects_file = check_outputs(args.input, output, rejects)
    except OutputError as exc:
        print(f"predmesh batch score: {exc}", file=sys.stderr)
        return EXIT_USAGE
    started = time.perf_counter()
    with Clients(settings) as clients:
        attempt = Attempt(clients.first, lambda why: print(f"predmesh batch score: ({why})", file=sys.stderr),
                          settings=settings, kind="score", model=args.model, input=input_name(args.input))

        def record(status: str, message: str, key: str, outcome=None) -> None:
            fields = {"run_key": key, "message": one_line(message),
                      "duration_seconds": time.perf_counter() - started}
            if outcome is not None:
                fields.update(model_version=outcome.model_version, rows=outcome.scored, rejected=outcome.rejected)
            if key:
                attempt.finish(status, **fields)

        bar = tqdm(desc=f"score {args.input.name}", unit="rows", disable=None, leave=False)

        def progress(done: int, total: int) -> None:
            if bar.total != total:
                bar.reset(total=total)
            bar.update(done - bar.n)

        key = ""
        began = now()
        expected: Expected | None = None

        def scored_numbers(prefix: str, numbers: list[int]) -> None:
            nonlocal expected
            if expected is None:
                expected = Expected(prefix)
            expected.add(numbers)

        try:
            key = f"score/{args.model}/{content_hash(args.input)[:24]}"
            attempt.start(run_key=key, message=f"scoring {args.input.name}")
            outcome = score_file(clients, args.model, args.input, output_file, rejects_file,
                                 progress=progress, mapping=mapping,
                                 scored_numbers=scored_numbers if args.wait_stored else None)
        except (InputError, OutputError) as exc:
            bar.close()
            record("failed", str(exc), key if attempt.number else "")  # first: its own note must not be the last line
            print(f"predmesh batch score: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except KeyboardInterrupt:
            bar.close()
            record("failed", "interrupted", key if attempt.number else "")
            raise
        except (ScoringFailed, PredmeshError, OSError) as exc:
            bar.close()
            reason = describe(exc, settings.server) if isinstance(exc, PredmeshError) else str(exc)
            record("failed", reason, key)  # first: a note that it could not be recorded must not be the last line
            print(f"predmesh batch score: FAILED: {reason}", file=sys.stderr)
            return EXIT_FAILED
        bar.close()
        storage = ("stored: durable on the server when answered (its default PREDMESH_PERSISTENCE=durable), "
                   "queryable in its database shortly after (--wait-stored waits for that)")
        late = False
        if args.wait_stored and outcome.scored:
            try:
                since = window_start(clients, args.model, key, began)
                done, waited = wait_stored(clients, args.model, expected or Expected(""), since,
                                           settings.wait_stored_s)
            except PredmeshError as exc:
                done, waited = False, 0.0
                storage = f"stored: could not be checked ({describe(exc, settings.server)})"
            else:
                left = expected.left if expected is not None else 0
                storage = (f"stored: all {outcome.scored} rows stored in the database (queryable) after {waited:.1f}s"
                           if done else f"stored: {left} of {outcome.scored} rows not queryable in the database "
                                        f"after {waited:.0f}s (PREDMESH_BATCH_WAIT_STORED_S); they are durable on "
                                        "the server and will be stored")
            late = not done
        record("succeeded", outcome.summary(), key, outcome)
    print(f"{outcome.summary()}; output {output}; "
          f"{'rejects (with reasons) ' + str(rejects) if outcome.rejected else 'no rejects'}; {storage}")
    if late:
        return EXIT_NOT_STORED
    return EXIT_REJECTS if outcome.rejected else EXIT_OK


def _of_params(settings, args) -> str:
    return json.dumps({"model": args.model or settings.model, "rows": args.rows or settings.rows})


def cmd_nightly(settings, args) -> int:
    from batch.runner import run_tasks
    from batch.tasks import clean_days
    day = args.date or yesterday()
    clean_days(args.model or settings.model, [day])
    return run_tasks(settings, ["Report", "--date", day.isoformat(), "--model", args.model or settings.model,
                                "--rows", str(args.rows or settings.rows)], local_scheduler=args.local_scheduler)


def cmd_backfill(settings, args) -> int:
    from batch.runner import run_tasks
    stop = args.stop or datetime.now(UTC).date()
    start = args.start or stop - timedelta(days=args.days_back)
    if start >= stop:
        print(f"predmesh batch backfill: start {start} is not before stop {stop}", file=sys.stderr)
        return EXIT_USAGE
    days_back = (datetime.now(UTC).date() - start).days + 1  # RangeDailyBase's window must reach start
    from batch.tasks import clean_days
    clean_days(args.model or settings.model, (start + timedelta(days=n) for n in range((stop - start).days)))
    return run_tasks(settings, ["RangeDailyBase", "--of", "Report", "--param-name", "date",
                                "--start", start.isoformat(), "--stop", stop.isoformat(),
                                "--days-back", str(max(days_back, 1)), "--of-params", _of_params(settings, args)],
                     local_scheduler=args.local_scheduler)


def cmd_scheduler(settings, args) -> int:
    from batch.runner import run_scheduler
    return run_scheduler(settings)


# the writer token's file is named (a path, not the secret): the nightly records its runs and feedback with it
CRON_VARIABLES = ("PREDMESH_SERVER_ADDR", "PREDMESH_LUIGID_ADDR", "PREDMESH_LOG_LEVEL", "PREDMESH_WRITER_TOKEN_FILE")


def crontab_line(schedule: str, root: Path, executable: Path, log: Path, environ: dict[str, str]) -> str:
    """The crontab line: every day, backfill the last 7 days (a missed night is caught up; done days are no-ops)
    through the central scheduler, with this shell's batch settings (never its secrets), appending to a log."""
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(environ.items())
                   if k in CRON_VARIABLES or k.startswith("PREDMESH_BATCH_"))
    q = shlex.quote
    return (f"{schedule} cd {q(str(root))} && mkdir -p {q(str(log.parent))} && {env + ' ' if env else ''}"
            f"{q(str(executable))} batch backfill --days-back 7 >> {q(str(log))} 2>&1")


def cmd_crontab(settings, args) -> int:
    root = Path.cwd()
    executable = Path(sys.executable).with_name("predmesh")
    log = (settings.batch_dir if settings.batch_dir.is_absolute() else root / settings.batch_dir) / "cron.log"
    print("# predmesh nightly batch: install with `crontab -e` (cron uses the machine's time zone)")
    if os.environ.get("PREDMESH_WRITER_TOKEN") and not os.environ.get("PREDMESH_WRITER_TOKEN_FILE"):
        print("# note: PREDMESH_WRITER_TOKEN is not copied into the line (a secret); put it in a file only you can "
              "read and set PREDMESH_WRITER_TOKEN_FILE, or the runs and feedback are not recorded")
    print(crontab_line(args.schedule, root, executable, log, dict(os.environ)))
    return EXIT_OK


def cmd_runs(settings, args) -> int:
    from batch.scoring import Clients, describe
    from predmesh import PredmeshError
    with Clients(settings) as clients:
        try:
            page = clients.first.list_batch_runs(model=args.model, kind=args.kind, page_size=args.limit,
                                                 run_key=args.key)
        except PredmeshError as exc:
            print(f"predmesh batch runs: {describe(exc, settings.server)}", file=sys.stderr)
            return EXIT_FAILED
    if args.json:
        print(json.dumps([{k: (v.isoformat() if isinstance(v, datetime) else v)
                           for k, v in vars(r).items() if k != "raw"} for r in page], indent=2))
        return EXIT_OK
    for r in page:
        print(run_line(r))
    return EXIT_OK


def run_line(r) -> str:
    """One attempt of `predmesh batch runs`: key#attempt, status, start and end (UTC), version, counts, input,
    then the summary or the error."""
    accuracy = f"{r.accuracy:.4f}" if r.accuracy is not None else "-"
    started = f"{r.started_at:%Y-%m-%d %H:%M:%S}" if r.started_at else "-"
    ended = f"{r.finished_at:%H:%M:%S}" if r.finished_at else "-"
    return (f"{started} → {ended}  {r.run_key}#{r.attempt}  {r.status:<9} {r.model}@{r.model_version or '?'}  "
            f"rows {r.rows}  rejected {r.rejected}  accuracy {accuracy}  {r.duration_seconds:.1f}s  "
            f"input {r.input or '-'}  {r.message}")


COMMANDS = {"score": cmd_score, "nightly": cmd_nightly, "backfill": cmd_backfill, "scheduler": cmd_scheduler,
            "crontab": cmd_crontab, "runs": cmd_runs}
