"""Entry point: `python -m ui` (also `predmesh ui`): the Panel dashboard."""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

from predmesh.env import ConfigError
from predmesh.logs import setup_logging
from ui.settings import UiSettings

log = logging.getLogger("ui")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="predmesh ui", description="predmesh dashboard (Panel)")
    parser.add_argument("--addr", help="host:port to listen on (default: PREDMESH_UI_ADDR or 127.0.0.1:5006)")
    parser.add_argument("--allow-websocket-origin", action="append", default=[], metavar="HOST[:PORT]",
                        help="websocket Origin to accept (repeatable; default: PREDMESH_UI_ALLOWED_ORIGINS, "
                             "else the dashboard's own address)")
    args = parser.parse_args(argv)
    setup_logging()
    # Bokeh and Tornado may log websocket traffic at DEBUG, which would include what users type (the admin token)
    for name in ("bokeh", "tornado"):
        logging.getLogger(name).setLevel(max(logging.getLogger().level, logging.INFO))
    try:
        settings = UiSettings.from_env(os.environ, addr=args.addr, origins=args.allow_websocket_origin)
    except ConfigError as exc:
        print(f"predmesh ui: {exc}", file=sys.stderr)
        return 2
    from ui.app import serve

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"predmesh dashboard on http://{settings.host}:{settings.port}/ (server {settings.server}"
          f"{', login required' if settings.password else ''})", flush=True)
    log.info("dashboard on %s:%s, server %s, websocket origins %s, login %s", settings.host, settings.port,
             settings.server, ",".join(settings.websocket_origins), "on" if settings.password else "off")
    serve(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
