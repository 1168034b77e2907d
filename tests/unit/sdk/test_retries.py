"""The SDK's channel retries a call refused UNAVAILABLE (predmesh/channel.py SERVICE_CONFIG), on every service it
calls: the docs say every call is. The health check was left out, so a replica restarting failed
`check_health` (and `predmesh status`, `wait_ready`) at once."""
from __future__ import annotations

from concurrent import futures

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from predmesh import Client


class FirstUnavailable(health_pb2_grpc.HealthServicer):
    def __init__(self):
        self.calls = 0

    def Check(self, request, context):
        self.calls += 1
        if self.calls == 1:
            context.abort(grpc.StatusCode.UNAVAILABLE, "draining")
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)


def test_a_health_check_refused_unavailable_is_retried():
    servicer = FirstUnavailable()
    server = grpc.server(futures.ThreadPoolExecutor(2))
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with Client(f"127.0.0.1:{port}", timeout=5) as client:
            assert client.check_health() == "SERVING"
        assert servicer.calls == 2
    finally:
        server.stop(0)
