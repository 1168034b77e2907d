"""Entry point: `predmesh migrate` / `python -m database [migrate|status]` against PREDMESH_DATABASE_URL."""
from __future__ import annotations

import argparse
import logging
import os
import sys

from predmesh.env import Env
from predmesh.logs import setup_logging

log = logging.getLogger("database")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="predmesh migrate",
                                     description="apply database migrations to PREDMESH_DATABASE_URL")
    parser.add_argument("command", nargs="?", default="migrate", choices=["migrate", "status"],
                        help="migrate (default): apply pending migrations; status: list them")
    parser.add_argument("--url", help="database URL (default: PREDMESH_DATABASE_URL or the local SQLite file)")
    args = parser.parse_args(argv)
    setup_logging()
    from database.connect import DEFAULT_URL, make_database, redact
    from database.migrate import applied, available, migrate

    url = args.url or Env(os.environ).str("DATABASE_URL", DEFAULT_URL)
    database = make_database(url)
    try:
        database.connect()
    except Exception as exc:
        print(f"cannot connect to {redact(url)}: {exc}".strip(), file=sys.stderr)
        return 1
    try:
        if args.command == "status":
            done = set(applied(database))
            for name in available():
                print(f"{'applied' if name in done else 'pending'}  {name}")
            return 0
        names = migrate(database)
        print(f"applied {', '.join(names)}" if names else f"{redact(url)} is up to date")
        return 0
    finally:
        database.close()


if __name__ == "__main__":
    sys.exit(main())
