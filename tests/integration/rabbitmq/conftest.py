"""The queue tests' stack: a fresh consumer on a unique prefix on the shared broker, in front of the module's own
`served` server (each test module defines `served`: a server and its PostgreSQL schema)."""
from __future__ import annotations

import pytest

from tests.support.queue import Broker, ConsumerProc, shared_amqp_url, unique_prefix


@pytest.fixture
def stack(served, tmp_path):
    """(server, broker helper, consumer, schema); the prefix's queues and exchanges are deleted afterwards."""
    server, schema = served
    prefix = unique_prefix()
    broker = Broker(shared_amqp_url(), prefix)
    with ConsumerProc(server.target, broker.url, prefix, tmp_path / "consumer.log") as consumer:
        try:
            yield server, broker, consumer, schema
        finally:
            consumer.kill()
            broker.delete_topology(extra_queues=[f"{prefix}.results.all"])
