"""gRPC server reflection, both protocols, over every file of the contract.

grpcio-reflection serves only grpc.reflection.v1alpha; current tools (buf curl, grpcurl >= 1.8.8,
Postman) ask grpc.reflection.v1 first. v1 is the same protocol under a new package name (its
messages are field-for-field those of v1alpha), so the one servicer answers both: v1 is served
through a generic handler with the v1alpha message classes, and a v1 copy of the reflection file
is added to the descriptor pool so that `describe grpc.reflection.v1.ServerReflection` works too.

Reflection answers from protobuf's default descriptor pool, which holds only the files some module
imported. errors.proto (the ErrorReason enum) and google/rpc/error_details.proto (ErrorInfo) are
imported here so that `grpcurl describe saas_llm.v1.ErrorReason` works: no RPC references them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from google.rpc import error_details_pb2  # noqa: F401  (registers google.rpc.ErrorInfo)
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

from saas_llm.v1 import errors_pb2  # noqa: F401  (registers saas_llm.v1.ErrorReason)

V1ALPHA_SERVICE: str = reflection.SERVICE_NAME
V1_SERVICE = "grpc.reflection.v1.ServerReflection"
_V1_FILE = "grpc/reflection/v1/reflection.proto"


def _register_v1_file() -> None:
    """Add grpc/reflection/v1/reflection.proto (v1alpha's file, renamed) to the default pool."""
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName(_V1_FILE)
        return
    except KeyError:
        pass
    file = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(file)
    old, new = f".{file.package}.", ".grpc.reflection.v1."
    file.name = _V1_FILE
    file.package = "grpc.reflection.v1"
    for message in file.message_type:
        for field in message.field:
            if field.HasField("type_name"):
                field.type_name = field.type_name.replace(old, new)
    for service in file.service:
        for method in service.method:
            method.input_type = method.input_type.replace(old, new)
            method.output_type = method.output_type.replace(old, new)
    pool.AddSerializedFile(file.SerializeToString())


# At import, so that the v1 service is in the pool for whoever names it (tests, tools).
_register_v1_file()


class _MemberAwarePool:
    """The default pool, answering "the file containing X" for members too (a method, a field,
    an enum value), which `grpcurl describe saas_llm.v1.JobService.CreateJob` asks for and
    the upb pool does not resolve."""

    def __init__(self, pool: descriptor_pool.DescriptorPool) -> None:
        self._pool = pool

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)

    def FindFileContainingSymbol(self, symbol: str) -> Any:
        try:
            return self._pool.FindFileContainingSymbol(symbol)
        except KeyError:
            parent = symbol.rpartition(".")[0]
            if not parent:
                raise
            for find in (
                self._pool.FindServiceByName,
                self._pool.FindMessageTypeByName,
                self._pool.FindEnumTypeByName,
            ):
                try:
                    return find(parent).file
                except KeyError:
                    continue
            raise


def enable_reflection(server: grpc.aio.Server, service_names: Iterable[str]) -> None:
    """Serve reflection v1alpha and v1 for `service_names` (and the reflection services)."""
    _register_v1_file()
    servicer: Any = reflection.aio.ReflectionServicer(
        (*service_names, V1ALPHA_SERVICE, V1_SERVICE),
        pool=_MemberAwarePool(descriptor_pool.Default()),
    )
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    v1 = grpc.method_handlers_generic_handler(
        V1_SERVICE,
        {
            "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
                servicer.ServerReflectionInfo,
                request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
                response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
            )
        },
    )
    server.add_generic_rpc_handlers((v1,))
