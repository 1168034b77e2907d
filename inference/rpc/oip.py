"""The Open Inference Protocol (KServe V2) gRPC service, plus Triton's ModelConfig, over the same registry.

Input: one FP32 (or FP64) tensor `[N, n_features]`, columns in the model's schema order, as raw_input_contents
or typed contents. Outputs: `label` (INT64 [N], index into the model's classes) and `probabilities`
(FP32 [N, n_classes]), always as raw_output_contents. Scoring goes through the model's adaptive batcher and
every row is recorded exactly like a Predict call (scoring.score_and_record).
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from inference import errors
from inference.bounds import MAX_ID, check_name, check_text, shown
from inference.models.registry import ModelRegistry
from inference.recording.recorder import Recorder
from inference.rpc.edge import rpc
from inference.scoring.convert import transport_of
from inference.scoring.score import score_and_record
from predmesh._version import __version__
from predmesh.oip import grpc_predict_v2_pb2 as pb
from predmesh.oip import grpc_predict_v2_pb2_grpc as pb_grpc

SERVICE = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
INPUT = "input"
LABEL, PROBABILITIES = "label", "probabilities"
_DTYPES: dict[str, np.dtype[Any]] = {"FP32": np.dtype("<f4"), "FP64": np.dtype("<f8")}
PID_HEADER = "predmesh-pid"
_SERVER_NAME, _SERVER_VERSION = "predmesh", __version__


class OipServicer(pb_grpc.GRPCInferenceServiceServicer):
    """ServerLive/Ready, ModelReady, Server/ModelMetadata, ModelInfer, ModelConfig."""

    def __init__(self, registry: ModelRegistry, recorder: Recorder, *, max_batch_rows: int,
                 ready: Callable[[], bool]):
        self.registry = registry
        self.recorder = recorder
        self.max_batch_rows = max_batch_rows
        self._ready = ready

    def _model(self, name: str, version: str):
        model = self.registry.get(name)
        if version and version != model.version:
            check_name("version", version)
            raise errors.ModelNotFound(f"model {shown(name)} version {shown(version)} is not serving "
                                       f"(serving version {model.version})")
        return model

    @rpc
    def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    @rpc
    def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=self._ready())

    @rpc
    def ModelReady(self, request, context):
        try:
            self._model(request.name, request.version)
        except errors.PredmeshError:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=self._ready())

    @rpc
    def ServerMetadata(self, request, context):
        # The answering process, so a client (and the tests) can tell the processes of a group apart.
        context.set_trailing_metadata(((PID_HEADER, str(os.getpid())),))
        return pb.ServerMetadataResponse(name=_SERVER_NAME, version=_SERVER_VERSION, extensions=[])

    @rpc
    def ModelMetadata(self, request, context):
        model = self._model(request.name, request.version)
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=model.name, versions=[model.version], platform=f"sklearn_{model.runtime}",
            inputs=[tensor(name=INPUT, datatype="FP32", shape=[-1, len(model.names)])],
            outputs=[tensor(name=LABEL, datatype="INT64", shape=[-1]),
                     tensor(name=PROBABILITIES, datatype="FP32", shape=[-1, len(model.classes)])])

    @rpc
    def ModelConfig(self, request, context):
        model = self._model(request.name, request.version)
        return pb.ModelConfigResponse(config=pb.ModelConfig(
            name=model.name, platform=f"sklearn_{model.runtime}", backend="predmesh",
            max_batch_size=self.max_batch_rows,
            input=[pb.ModelInput(name=INPUT, data_type=pb.TYPE_FP32, dims=[len(model.names)])],
            output=[pb.ModelOutput(name=LABEL, data_type=pb.TYPE_INT64, dims=[1]),
                    pb.ModelOutput(name=PROBABILITIES, data_type=pb.TYPE_FP32, dims=[len(model.classes)])]))

    @rpc
    def ModelInfer(self, request, context):
        started = time.perf_counter()
        model = self._model(request.model_name, request.model_version)
        rows = self._rows(request, len(model.names))
        model.check_rows(rows)
        wanted = [o.name for o in request.outputs] or [LABEL, PROBABILITIES]
        unknown = [n for n in wanted if n not in (LABEL, PROBABILITIES)]
        if unknown:
            raise errors.InvalidArgument(f"unknown output {shown(unknown[0])}; this model has {LABEL!r} and "
                                          f"{PROBABILITIES!r}")
        n = len(rows)
        rid = check_text("id", request.id, MAX_ID)
        request_ids = [rid] if n == 1 else [f"{rid}-{i}" if rid else "" for i in range(n)]
        names = model.names
        probabilities, _ = score_and_record(
            self.recorder, self.registry.metrics, model, rows, [zip(names, row) for row in rows],
            request_ids, transport_of(context.invocation_metadata()), started, context.time_remaining())
        response = pb.ModelInferResponse(model_name=model.name, model_version=model.version, id=rid)
        for name in wanted:
            if name == LABEL:
                data, datatype, shape = probabilities.argmax(axis=1).astype("<i8"), "INT64", [n]
            else:
                data, datatype, shape = probabilities.astype("<f4"), "FP32", [n, probabilities.shape[1]]
            response.outputs.add(name=name, datatype=datatype, shape=shape)
            response.raw_output_contents.append(data.tobytes())
        return response

    def _rows(self, request, n_features: int) -> list[list[float]]:
        """The single input tensor as N rows of n_features floats; INVALID_ARGUMENT on anything else."""
        if len(request.inputs) != 1:
            raise errors.InvalidArgument(f"expected exactly one input tensor {INPUT!r}, got {len(request.inputs)}")
        tensor = request.inputs[0]
        if tensor.name != INPUT:
            raise errors.InvalidArgument(f"unknown input {shown(tensor.name)}; this model has one input {INPUT!r}")
        dtype = _DTYPES.get(tensor.datatype)
        if dtype is None:
            raise errors.InvalidArgument(f"input {INPUT!r} has datatype {shown(tensor.datatype)}; send FP32")
        shape = list(tensor.shape)
        if len(shape) != 2 or shape[1] != n_features or shape[0] < 1:
            raise errors.InvalidArgument(f"input {INPUT!r} has shape {shape}; expected [N, {n_features}] "
                                         "with N >= 1")
        if shape[0] > self.max_batch_rows:
            raise errors.TooManyRows(f"{shape[0]} rows exceed the limit of {self.max_batch_rows} per request; "
                                     "split the request")
        if request.raw_input_contents:
            if len(request.raw_input_contents) != 1:
                raise errors.InvalidArgument("raw_input_contents must hold exactly one entry per input")
            raw = request.raw_input_contents[0]
            if len(raw) != shape[0] * n_features * dtype.itemsize:
                raise errors.InvalidArgument(f"raw input holds {len(raw)} bytes; shape {shape} of "
                                             f"{tensor.datatype} needs {shape[0] * n_features * dtype.itemsize}")
            return np.frombuffer(raw, dtype=dtype).reshape(shape[0], n_features).tolist()
        # Typed contents read back as Python floats (FP32 ones exactly the float32 values): no numpy needed.
        values = tensor.contents.fp32_contents if tensor.datatype == "FP32" else tensor.contents.fp64_contents
        if len(values) != shape[0] * n_features:
            raise errors.InvalidArgument(f"input {INPUT!r} holds {len(values)} values; shape {shape} needs "
                                         f"{shape[0] * n_features}")
        if shape[0] == 1:
            return [list(values)]
        return [values[i:i + n_features] for i in range(0, len(values), n_features)]


def register(server, registry: ModelRegistry, recorder: Recorder, *, max_batch_rows: int,
             ready: Callable[[], bool]) -> None:
    """Add the OIP service to a grpc server."""
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(
        OipServicer(registry, recorder, max_batch_rows=max_batch_rows, ready=ready), server)
