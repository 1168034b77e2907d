"""Entry point: `predmesh migrate` / `predmesh retention` / `python -m database [migrate|status|retention]` against
PREDMESH_DATABASE_URL."""
from __future__ import annotations

from predmesh.startup import StartupError, interrupt_exits, run_guarded

interrupt_exits("python -m database")  # first: Ctrl-C during the imports below ends with one line too

import argparse
import logging
import os
import sys

from database.settings import DatabaseSettings, check_url
from predmesh.env import env_epilog, variables_read
from predmesh.logs import setup_logging

log = logging.getLogger("database")


def main(argv: list[str] | None = None, prog: str = "python -m database") -> int:
    parser = argparse.ArgumentParser(prog=prog, description="apply database migrations to PREDMESH_DATABASE_URL, "
                                     "or run its retention job",
                                     epilog=env_epilog(variables_read(DatabaseSettings.from_env)),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", nargs="?", default="migrate", choices=["migrate", "status", "retention"],
                        help="migrate (default): apply pending migrations; status: list them, exit 1 while any "
                             "is pending (0: up to date); retention: create the prediction partitions ahead and "
                             "remove predictions older than PREDMESH_RETENTION_DAYS (PostgreSQL: drops whole daily "
                             "partitions; SQLite: deletes rows); aggregates stay")
    parser.add_argument("--days", type=int, default=None,
                        help="retention: keep this many days (default PREDMESH_RETENTION_DAYS; 0 keeps everything)")
    parser.add_argument("--url", help="database URL (default: PREDMESH_DATABASE_URL or the local SQLite file)")
    args = parser.parse_args(argv)
    return run_guarded(prog, lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    settings = DatabaseSettings.from_env(os.environ)
    setup_logging(settings.log_level)
    from database.connect import make_database
    from database.migrate import migration_lock

    url = check_url(args.url) if args.url else settings.url
    database = make_database(url)
    with migration_lock(database):  # SQLite: connect and migrate in turn with servers starting on a new file
        return _command(args, settings, database, url)


def _command(args: argparse.Namespace, settings: DatabaseSettings, database, url: str) -> int:
    from database.connect import redact
    from database.migrate import applied, available, migrate

    try:
        database.connect()
    except Exception as exc:
        raise StartupError(" ".join(f"cannot connect to {redact(url)}: {exc}".split())) from None
    try:
        if args.command == "retention":
            return _retention(database, settings.retention_days if args.days is None else args.days)
        if args.command == "status":
            done = set(applied(database))
            for name in available():
                print(f"{'applied' if name in done else 'pending'}  {name}")
            waiting = [name for name in available() if name not in done]
            if waiting:  # exit 1, so a deploy step or a readiness check can gate on it
                print(f"{len(waiting)} pending: run `predmesh migrate`", file=sys.stderr)
                return 1
            return 0
        names = migrate(database)
        print(f"applied {', '.join(names)}" if names else f"{redact(url)} is up to date")
        return 0
    finally:
        database.close()


def _retention(database, days: int) -> int:
    from database.migrate import SchemaNotCurrent, require_current
    from database.retention import run

    if days < 0:
        raise StartupError(f"--days {days}: use 0 (keep everything) or more")
    try:
        require_current(database)
    except SchemaNotCurrent as exc:
        raise StartupError(str(exc)) from None
    report = run(database, days)
    print(report.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
