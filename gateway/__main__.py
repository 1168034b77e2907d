"""Entry point: `python -m gateway` (also `predmesh gateway`): build the descriptor, render, validate, run Envoy."""
from __future__ import annotations

from predmesh.startup import check_bindable, interrupt_exits, make_directory, run_guarded

interrupt_exits("python -m gateway")  # first: Ctrl-C during the imports below ends with one line too

import argparse
import logging
import os
import signal
import subprocess
import sys

from gateway.config import OPENAPI_PATH, ConfigInvalid, build, envoy_argv
from gateway.docs import DOCS_PATH
from gateway.settings import GatewaySettings
from predmesh.env import env_epilog, variables_read
from predmesh.logs import setup_logging
from predmesh.startup import StartupError

log = logging.getLogger("gateway")


def run_envoy(settings: GatewaySettings, envoy_yaml) -> int:
    """Run Envoy in the foreground; SIGTERM/SIGINT are forwarded to it; returns its exit code."""
    proc = subprocess.Popen(envoy_argv(settings, envoy_yaml))

    def forward(signum, frame):
        if proc.poll() is None:
            proc.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    while True:  # in short waits: a signal delivered to another thread gets its handler run all the same
        try:
            return proc.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            pass


def main(argv: list[str] | None = None, prog: str = "python -m gateway") -> int:
    parser = argparse.ArgumentParser(prog=prog, description="predmesh Envoy REST gateway",
                                     epilog=env_epilog(variables_read(GatewaySettings.from_env)),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true",
                        help="build the descriptor, OpenAPI document and envoy.yaml, validate them, and exit")
    args = parser.parse_args(argv)
    return run_guarded(prog, lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    settings = GatewaySettings.from_env(os.environ)
    setup_logging(settings.launcher_log_level)
    if not args.check:  # before anything is written: a second gateway must not touch the first one's files
        for addr, what in ((settings.public_addr, "PREDMESH_GATEWAY_ADDR"),
                           (settings.admin_addr, "PREDMESH_GATEWAY_ADMIN_ADDR"),
                           (settings.envoy_admin_addr, "PREDMESH_GATEWAY_ENVOY_ADMIN_ADDR"),
                           (settings.stats_addr, "PREDMESH_GATEWAY_STATS_ADDR")):
            if addr:
                check_bindable(addr, f"gateway address {what}")
    make_directory(settings.work_dir, "PREDMESH_GATEWAY_DIR")
    try:
        built = build(settings)
    except ConfigInvalid as exc:
        raise StartupError(str(exc)) from None
    if args.check:
        log.info("configuration valid: %s", built.envoy_yaml)
        return 0
    log.info("predmesh gateway: REST on %s (OpenAPI: %s%s, docs: %s), admin REST on %s, Envoy admin on http://%s; "
             "upstream replicas: %s", settings.public_url, settings.public_url, OPENAPI_PATH,
             f"{settings.public_url}{DOCS_PATH}" if settings.docs else "off",
             settings.admin_url or "off", settings.envoy_admin_addr, ", ".join(settings.upstreams))
    code = run_envoy(settings, built.envoy_yaml)
    log.info("envoy exited with %d", code)
    return 0 if code in (0, -signal.SIGTERM, -signal.SIGINT) else code


if __name__ == "__main__":
    sys.exit(main())
