"""gRPC server reflection under both names clients ask for: `grpc.reflection.v1` (grpcurl >= 1.8, Postman, buf
curl) and `grpc.reflection.v1alpha` (older clients).

grpcio-reflection ships only v1alpha. The v1 protocol is the same messages with the same field numbers under
another package, so v1 is served by the same servicer with the (wire-identical) v1alpha messages, and a v1 copy
of the file descriptor is added to the pool so that the v1 service can itself be listed and described.
"""
from __future__ import annotations

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

V1ALPHA_SERVICE = reflection.SERVICE_NAME
V1_SERVICE = "grpc.reflection.v1.ServerReflection"
_V1_FILE = "grpc/reflection/v1/reflection.proto"


def _v1_file() -> descriptor_pb2.FileDescriptorProto:
    """grpc/reflection/v1/reflection.proto, derived from the v1alpha descriptor (same messages and numbers)."""
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    old, new = f".{proto.package}.", ".grpc.reflection.v1."
    proto.name, proto.package = _V1_FILE, "grpc.reflection.v1"
    proto.ClearField("options")

    def retype(messages) -> None:
        for message in messages:
            for field in message.field:
                if field.type_name.startswith(old):
                    field.type_name = new + field.type_name[len(old):]
            retype(message.nested_type)

    retype(proto.message_type)
    for service in proto.service:
        for method in service.method:
            method.input_type = new + method.input_type[len(old):]
            method.output_type = new + method.output_type[len(old):]
    return proto


def _ensure_v1_descriptor(pool: descriptor_pool.DescriptorPool) -> None:
    try:
        pool.FindFileByName(_V1_FILE)
    except KeyError:
        pool.Add(_v1_file())


def declaring_symbol(pool: descriptor_pool.DescriptorPool, name: str) -> str:
    """name, or for a method (`pkg.Service.Method`) its service. The reflection protocol's file_containing_symbol
    takes methods (grpcurl `describe pkg.Service.Method` asks for one), but the upb DescriptorPool finds only
    services, messages, fields and enums: a method then reads "Symbol not found"."""
    try:
        pool.FindFileContainingSymbol(name)
        return name
    except KeyError:
        pass
    service, _, method = name.rpartition(".")
    try:
        return service if method in pool.FindServiceByName(service).methods_by_name else name
    except KeyError:
        return name


class _ReflectionServicer(reflection.ReflectionServicer):
    """grpcio-reflection's servicer, with methods resolved to the file of their service (declaring_symbol)."""

    def __init__(self, service_names: list[str], pool: descriptor_pool.DescriptorPool):
        super().__init__(service_names, pool=pool)
        self._symbols = pool  # our own reference: the base class keeps its pool in a private attribute

    def _file_containing_symbol(self, request, fully_qualified_name):
        # The hook grpcio-reflection 1.x's servicer answers file_containing_symbol with (grpc_reflection/v1alpha/
        # _base.py); its stubs declare only __init__ of the base class.
        return super()._file_containing_symbol(  # type: ignore[misc]
            request, declaring_symbol(self._symbols, fully_qualified_name))


def enable_server_reflection(service_names, server: grpc.Server) -> None:
    """Serve reflection v1 and v1alpha for service_names (plus both reflection services) on a sync server."""
    pool = descriptor_pool.Default()
    _ensure_v1_descriptor(pool)
    servicer = _ReflectionServicer([*service_names, V1_SERVICE, V1ALPHA_SERVICE], pool=pool)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    v1 = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(V1_SERVICE, {"ServerReflectionInfo": v1}),))
