"""Entry point: `python -m consumer` (also `predmesh consume`): score RabbitMQ jobs through the inference server."""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from consumer.settings import ConsumerSettings
from predmesh import faults
from predmesh.env import ConfigError, env_epilog, split_addr, variables_read
from predmesh.logs import setup_logging
from predmesh.startup import check_bindable, run_guarded

log = logging.getLogger("consumer")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="predmesh consume", description="Consume prediction jobs from RabbitMQ (PREDMESH_AMQP_URL), score them "
        "through the inference server (PREDMESH_SERVER_ADDR, else PREDMESH_GRPC_ADDR) and publish the results.",
        epilog=env_epilog(variables_read(ConsumerSettings.from_env)),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args(argv)
    try:
        settings = ConsumerSettings.from_env(os.environ)
        faults.configure(os.environ.get(faults.ENV, ""))
    except ConfigError as exc:
        print(f"predmesh consume: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level)

    def start() -> int:
        if settings.metrics_addr:  # one line, not a traceback, when another process holds it
            check_bindable(settings.metrics_addr, "consumer metrics address PREDMESH_CONSUMER_METRICS_ADDR")
        return asyncio.run(run(settings))

    return run_guarded("predmesh consume", start)


async def run(settings: ConsumerSettings) -> int:
    from prometheus_client import CollectorRegistry, start_http_server

    from consumer.metrics import ConsumerMetrics
    from consumer.scoring import SdkScorer
    from consumer.worker import Worker
    from predmesh import Client
    from predmesh.spread import Spread

    registry = CollectorRegistry()
    metrics = ConsumerMetrics(registry)
    if settings.metrics_addr:
        host, port = split_addr(settings.metrics_addr)
        httpd, _ = start_http_server(port, addr=host, registry=registry)
        log.info("consumer metrics on http://%s:%d/metrics", host, httpd.server_port)  # the bound port, :0 too
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    def connect() -> Client:
        return Client(settings.target, timeout=settings.rpc_timeout_s, transport="queue", own_connection=True)

    with Spread(connect, settings.connections) as connections:
        log.info("%d connection(s) to %s; server processes reached: %s", settings.connections, settings.target,
                 ", ".join(f"pid {pid} ({n})" for pid, n in sorted(connections.processes.items())) or "not said")
        worker = Worker(settings, SdkScorer(connections.pick, settings.rpc_timeout_s), metrics)
        await worker.run(stop)
    log.info("consumer stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
