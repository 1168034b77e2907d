"""Entry point: `python -m gateway` (also `predmesh gateway`): build the descriptor, render, validate, run Envoy."""
from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys

from gateway.config import OPENAPI_PATH, build, envoy_binary
from gateway.settings import GatewaySettings
from predmesh.env import ConfigError
from predmesh.logs import setup_logging

log = logging.getLogger("gateway")


def run_envoy(settings: GatewaySettings, envoy_yaml) -> int:
    """Run Envoy in the foreground; SIGTERM/SIGINT are forwarded to it; returns its exit code."""
    argv = [envoy_binary(), "-c", str(envoy_yaml), "--concurrency", str(settings.concurrency),
            "--log-level", settings.log_level,
            "--disable-hot-restart"]  # several Envoys on one machine must not share the hot-restart socket
    proc = subprocess.Popen(argv)

    def forward(signum, frame):
        if proc.poll() is None:
            proc.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    return proc.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway", description="predmesh Envoy REST gateway")
    parser.add_argument("--check", action="store_true",
                        help="build the descriptor, OpenAPI document and envoy.yaml, validate them, and exit")
    args = parser.parse_args(argv)
    setup_logging()
    try:
        settings = GatewaySettings.from_env(os.environ)
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    built = build(settings)
    if args.check:
        log.info("configuration valid: %s", built.envoy_yaml)
        return 0
    log.info("predmesh gateway: REST on %s (OpenAPI: %s%s), admin REST on %s, Envoy admin on http://%s; "
             "upstream replicas: %s", settings.public_url, settings.public_url, OPENAPI_PATH,
             settings.admin_url or "off", settings.envoy_admin_addr, ", ".join(settings.upstreams))
    code = run_envoy(settings, built.envoy_yaml)
    log.info("envoy exited with %d", code)
    return 0 if code in (0, -signal.SIGTERM, -signal.SIGINT) else code


if __name__ == "__main__":
    sys.exit(main())
