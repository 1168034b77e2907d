"""Run MLServer with Triton's ModelConfig RPC added, so Triton's perf_analyzer can drive it (bench only).

perf_analyzer asks a server for ModelMetadata and Triton's ModelConfig before it sends any ModelInfer; MLServer
1.7 does not implement ModelConfig. This launcher runs in MLServer's own virtualenv: it adds one generic handler
for /inference.GRPCInferenceService/ModelConfig to MLServer's gRPC server (answering the pre-serialized configs
in $MLSERVER_MODEL_CONFIGS, a JSON file {model: hex}) and then runs `mlserver start`. MLServer's own handlers,
ModelInfer included, are untouched: the added method is only called at perf_analyzer's start.

Usage (by bench/mlserver.py): <mlserver venv>/bin/python bench/mlserver_modelconfig.py start <repository>
"""
from __future__ import annotations

import json
import os
import sys
from typing import Any

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]  # bench/mlserver.py shadows mlserver

import grpc
from mlserver.cli.main import main
from mlserver.grpc import server as mlserver_grpc

with open(os.environ["MLSERVER_MODEL_CONFIGS"]) as f:
    CONFIGS = {name: bytes.fromhex(raw) for name, raw in json.load(f).items()}


def _model_name(request: bytes) -> str:
    """Field 1 (name) of a ModelConfigRequest, read from the wire format (no generated classes needed here)."""
    i = 0
    while i < len(request):
        key, i = request[i], i + 1
        length = 0
        shift = 0
        while True:
            byte, i = request[i], i + 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        if key == 0x0A:
            return request[i:i + length].decode()
        i += length
    return ""


async def model_config(request: bytes, context) -> bytes:
    name = _model_name(request)
    if name not in CONFIGS:
        await context.abort(grpc.StatusCode.NOT_FOUND, f"model {name!r} not found")
    return CONFIGS[name]


_create = mlserver_grpc.GRPCServer._create_server


def _create_with_model_config(self):
    server = _create(self)
    handler: grpc.RpcMethodHandler[Any, Any] = grpc.unary_unary_rpc_method_handler(
        model_config, request_deserializer=None, response_serializer=None)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("inference.GRPCInferenceService", {"ModelConfig": handler}),))
    return server


mlserver_grpc.GRPCServer._create_server = _create_with_model_config

if __name__ == "__main__":
    sys.argv[0] = "mlserver"
    sys.exit(main())
