"""Entry point: `predmesh migrate` / `python -m database [migrate|status]` against PREDMESH_DATABASE_URL."""
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
    parser = argparse.ArgumentParser(prog=prog, description="apply database migrations to PREDMESH_DATABASE_URL",
                                     epilog=env_epilog(variables_read(DatabaseSettings.from_env)),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", nargs="?", default="migrate", choices=["migrate", "status"],
                        help="migrate (default): apply pending migrations; status: list them, exit 1 while any "
                             "is pending (0: up to date)")
    parser.add_argument("--url", help="database URL (default: PREDMESH_DATABASE_URL or the local SQLite file)")
    args = parser.parse_args(argv)
    return run_guarded(prog, lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    settings = DatabaseSettings.from_env(os.environ)
    setup_logging(settings.log_level)
    from database.connect import make_database, redact
    from database.migrate import applied, available, migrate

    url = check_url(args.url) if args.url else settings.url
    database = make_database(url)
    try:
        database.connect()
    except Exception as exc:
        raise StartupError(" ".join(f"cannot connect to {redact(url)}: {exc}".split())) from None
    try:
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


if __name__ == "__main__":
    sys.exit(main())
