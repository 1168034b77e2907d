"""Server reflection v1 (what grpcurl >= 1.8, buf curl and Postman ask for) next to v1alpha, on the real server."""
from __future__ import annotations

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2 as pb

VERSIONS = ["grpc.reflection.v1", "grpc.reflection.v1alpha"]


@pytest.fixture(scope="module")
def target(trained_store):
    """One in-process server for the module (reflection does not change what it serves)."""
    from prometheus_client import CollectorRegistry

    from inference.metrics import ServerMetrics
    from inference.rpc.server import InferenceServer
    from inference.settings import ServerSettings

    server = InferenceServer(ServerSettings(grpc_addr="127.0.0.1:0", metrics_addr="", model_store=trained_store,
                                            drain_seconds=0, grace_seconds=1, runtime="sklearn"),
                             metrics=ServerMetrics(CollectorRegistry()))
    port = server.start()
    yield f"127.0.0.1:{port}"
    server.stop(grace=0)


def ask(target: str, version: str, **request) -> pb.ServerReflectionResponse:
    """One request on /<version>.ServerReflection/ServerReflectionInfo (the two versions share the wire format)."""
    with grpc.insecure_channel(target) as channel:
        call = channel.stream_stream(f"/{version}.ServerReflection/ServerReflectionInfo",
                                     request_serializer=pb.ServerReflectionRequest.SerializeToString,
                                     response_deserializer=pb.ServerReflectionResponse.FromString)
        return next(iter(call(iter([pb.ServerReflectionRequest(**request)]), timeout=5)))


@pytest.mark.parametrize("version", VERSIONS)
def test_list_and_describe_through_each_version(target, version):
    listed = {s.name for s in ask(target, version, list_services="").list_services_response.service}
    assert {"predmesh.v1.InferenceService", "predmesh.v1.ModelAdminService", "inference.GRPCInferenceService",
            "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection"} <= listed
    for symbol in ("predmesh.v1.InferenceService", "grpc.reflection.v1.ServerReflection"):
        answer = ask(target, version, file_containing_symbol=symbol)
        files = [descriptor_pb2.FileDescriptorProto.FromString(raw)
                 for raw in answer.file_descriptor_response.file_descriptor_proto]
        services = {f"{f.package}.{s.name}" for f in files for s in f.service}
        assert symbol in services, (symbol, services)
    missing = ask(target, version, file_containing_symbol="no.such.Service")
    assert missing.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]


def test_v1_descriptor_names_v1_messages(target):
    answer = ask(target, "grpc.reflection.v1", file_by_filename="grpc/reflection/v1/reflection.proto")
    (raw,) = answer.file_descriptor_response.file_descriptor_proto
    proto = descriptor_pb2.FileDescriptorProto.FromString(raw)
    method = proto.service[0].method[0]
    assert proto.package == "grpc.reflection.v1"
    assert (method.input_type, method.output_type) == (".grpc.reflection.v1.ServerReflectionRequest",
                                                       ".grpc.reflection.v1.ServerReflectionResponse")
    assert all(not f.type_name or f.type_name.startswith(".grpc.reflection.v1.")
               for m in proto.message_type for f in m.field)
