"""Build the FileDescriptorSet Envoy's transcoder needs from protos/ (at gateway start, never committed)."""
from __future__ import annotations

import importlib.resources
import logging
from pathlib import Path

from grpc_tools import protoc

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
THIRD_PARTY = PROTOS / "third_party"
CONTRACT = PROTOS / "predmesh" / "v1"
WELL_KNOWN = Path(str(importlib.resources.files("grpc_tools") / "_proto"))

PUBLIC_SERVICES = ("predmesh.v1.InferenceService", "predmesh.v1.AnalyticsService")
ADMIN_SERVICES = ("predmesh.v1.ModelAdminService",)
# Passed through as native gRPC on the public listener (never the admin service): the REST services, the Open
# Inference Protocol (Triton/KServe clients), health (probes) and reflection v1 and v1alpha (grpcurl, buf, Postman).
PUBLIC_GRPC_SERVICES = (*PUBLIC_SERVICES, "inference.GRPCInferenceService", "grpc.health.v1.Health",
                        "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection")
HEALTH_SERVICE = "predmesh.v1.InferenceService"


class DescriptorError(RuntimeError):
    """protoc could not compile the contract."""


def build_descriptor(out: Path) -> Path:
    """Compile predmesh/v1/*.proto with all imports into out (a binary FileDescriptorSet); returns out."""
    out.parent.mkdir(parents=True, exist_ok=True)
    files = sorted(str(p.relative_to(PROTOS)) for p in CONTRACT.glob("*.proto"))
    if not files:
        raise DescriptorError(f"no .proto files under {CONTRACT}")
    tmp = out.with_suffix(out.suffix + ".tmp")
    args = ["grpc_tools.protoc", f"-I{PROTOS}", f"-I{THIRD_PARTY}", f"-I{WELL_KNOWN}",
            "--include_imports", "--include_source_info", f"--descriptor_set_out={tmp}", *files]
    if protoc.main(args) != 0:
        raise DescriptorError(f"protoc failed on {', '.join(files)}")
    tmp.replace(out)
    log.info("built descriptor set %s from %d contract files", out, len(files))
    return out
