"""Entry point: `python -m ui` (also `predmesh ui`): the Panel dashboard."""
from __future__ import annotations

from predmesh.startup import check_bindable, interrupt_exits, run_guarded

interrupt_exits("python -m ui")  # first: Ctrl-C during the (slow) Panel imports ends with one line too

import argparse
import logging
import os
import signal
import sys

from predmesh.env import env_epilog, variables_read
from predmesh.logs import setup_logging
from ui.settings import UiSettings

log = logging.getLogger("ui")


def parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="predmesh dashboard (Panel): predict, history, model card, "
                                "quality and reload, through the SDK (transport ui)",
                                epilog=env_epilog(variables_read(UiSettings.from_env)),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--addr", help="host:port to listen on (default: PREDMESH_UI_ADDR, else 127.0.0.1:5006)")
    p.add_argument("--allow-websocket-origin", action="append", default=[], metavar="HOST[:PORT]",
                   help="websocket Origin to accept (repeatable; default: PREDMESH_UI_ALLOWED_ORIGINS, else the "
                        "dashboard's own address)")
    return p


def main(argv: list[str] | None = None, prog: str = "python -m ui") -> int:
    args = parser(prog).parse_args(argv)
    return run_guarded(prog, lambda: _run(args))


def _run(args) -> int:
    settings = UiSettings.from_env(os.environ, addr=args.addr, origins=args.allow_websocket_origin)
    setup_logging(settings.log_level)
    # Bokeh and Tornado may log websocket traffic at DEBUG, which would include what users type (the admin token)
    for name in ("bokeh", "tornado"):
        logging.getLogger(name).setLevel(max(logging.getLogger().level, logging.INFO))
    check_bindable(settings.addr, "dashboard address PREDMESH_UI_ADDR")
    from ui.app import serve

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
    print(f"predmesh dashboard on http://{settings.host}:{settings.port}/ (server {settings.server}"
          f"{', login required' if settings.password else ''})", flush=True)
    log.info("dashboard on %s:%s, server %s, websocket origins %s, login %s", settings.host, settings.port,
             settings.server, ",".join(settings.websocket_origins), "on" if settings.password else "off")
    serve(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
