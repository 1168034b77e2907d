"""The Open Inference Protocol (KServe V2) gRPC service, plus Triton's ModelConfig, over the same registry.

Input, either:
- one FP32 (or FP64) tensor `input` `[N, n_features]`, columns in the model's schema order (a model whose features
  are all numbers; what ModelMetadata declares for an "array" model), or
- one tensor per feature, named after it, `[N]` or `[N, 1]`: FP64 (or any numeric type; NaN = missing) for a
  number, BYTES for a category (an empty element = missing), BOOL for a boolean (inference/rpc/tensors.py); what
  ModelMetadata declares for a "frame" model, as Triton's and MLServer's clients send a table's columns.
Both as raw_input_contents or typed contents. Outputs: `label` (INT64 [N], index into the model's classes) and
`probabilities` ([N, n_classes]: FP32 for an "array" model, FP64 for a "frame" one), always as
raw_output_contents. Every value is validated by the model's runtime exactly like a Predict call's, scoring goes
through the model's adaptive batcher and every row is recorded like a Predict call (scoring.score_and_record).
"""
from __future__ import annotations

import os
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from inference import errors
from inference.bounds import MAX_ID, check_name, check_text, shown
from inference.models.registry import ModelRegistry
from inference.recording.recorder import Recorder
from inference.rpc.edge import rpc
from inference.rpc.tensors import DATATYPE_OF_KIND, column_rows, decode_column, float_or_missing
from inference.scoring.convert import transport_of
from inference.scoring.idempotency import NO_CLAIM, KeyedRecorder, Keys, keyed_hashes, one_version
from inference.scoring.score import score_and_record
from predmesh._version import __version__
from predmesh.channel import PID_HEADER
from predmesh.oip import grpc_predict_v2_pb2 as pb
from predmesh.oip import grpc_predict_v2_pb2_grpc as pb_grpc

SERVICE = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
INPUT = "input"
LABEL, PROBABILITIES = "label", "probabilities"
_DTYPES: dict[str, np.dtype[Any]] = {"FP32": np.dtype("<f4"), "FP64": np.dtype("<f8")}
_SERVER_NAME, _SERVER_VERSION = "predmesh", __version__
_CONFIG_TYPES = {"FP64": pb.TYPE_FP64, "BYTES": pb.TYPE_STRING, "BOOL": pb.TYPE_BOOL}


def _per_feature(model) -> bool:
    """Whether ModelMetadata declares one input per feature (a "frame" model) rather than one matrix."""
    return model.manifest.input == "frame"


def _booleans(model) -> frozenset[str]:
    return frozenset(f.name for f in model.manifest.features if f.kind == "boolean")


_ZERO_ONE = {0.0: False, 1.0: True}  # anything else stays a number, which the runtime refuses for a boolean


def _probability_type(model) -> tuple[str, str]:
    """(datatype, numpy dtype) of the probabilities output: FP64 for a "frame" model (a pipeline's own
    predict_proba, exactly), FP32 for an "array" model (as ever)."""
    return ("FP64", "<f8") if _per_feature(model) else ("FP32", "<f4")


class OipServicer(pb_grpc.GRPCInferenceServiceServicer):
    """ServerLive/Ready, ModelReady, Server/ModelMetadata, ModelInfer, ModelConfig."""

    def __init__(self, registry: ModelRegistry, recorder: Recorder, *, max_batch_rows: int,
                 ready: Callable[[], bool], keys: Keys | None = None):
        self.registry = registry
        self.keys = keys if keys is not None else Keys(0)
        self.recorder = KeyedRecorder(recorder, self.keys)  # committed answers become their keys' answers
        self.max_batch_rows = max_batch_rows
        self._ready = ready
        # answer heads per served model (see _answer_head); weak keys, so a replaced model's go with it
        self._heads: weakref.WeakKeyDictionary[Any, dict[tuple, pb.ModelInferResponse]] = weakref.WeakKeyDictionary()

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
        if _per_feature(model):
            inputs = [tensor(name=f.name, datatype=DATATYPE_OF_KIND[f.kind], shape=[-1, 1])
                      for f in model.manifest.features]
        else:
            inputs = [tensor(name=INPUT, datatype="FP32", shape=[-1, len(model.names)])]
        return pb.ModelMetadataResponse(
            name=model.name, versions=[model.version], platform=f"sklearn_{model.runtime}", inputs=inputs,
            outputs=[tensor(name=LABEL, datatype="INT64", shape=[-1]),
                     tensor(name=PROBABILITIES, datatype=_probability_type(model)[0],
                            shape=[-1, len(model.classes)])])

    @rpc
    def ModelConfig(self, request, context):
        model = self._model(request.name, request.version)
        if _per_feature(model):
            inputs = [pb.ModelInput(name=f.name, data_type=_CONFIG_TYPES[DATATYPE_OF_KIND[f.kind]], dims=[1])
                      for f in model.manifest.features]
        else:
            inputs = [pb.ModelInput(name=INPUT, data_type=pb.TYPE_FP32, dims=[len(model.names)])]
        probabilities = _CONFIG_TYPES["FP64"] if _per_feature(model) else pb.TYPE_FP32
        return pb.ModelConfigResponse(config=pb.ModelConfig(
            name=model.name, platform=f"sklearn_{model.runtime}", backend="predmesh",
            max_batch_size=self.max_batch_rows, input=inputs,
            output=[pb.ModelOutput(name=LABEL, data_type=pb.TYPE_INT64, dims=[1]),
                    pb.ModelOutput(name=PROBABILITIES, data_type=probabilities, dims=[len(model.classes)])]))

    @rpc
    def ModelInfer(self, request, context):
        started = time.perf_counter()
        model = self._model(request.model_name, request.model_version)
        rows = self._rows(request, model)
        wanted = [o.name for o in request.outputs] or [LABEL, PROBABILITIES]
        unknown = [n for n in wanted if n not in (LABEL, PROBABILITIES)]
        if unknown:
            raise errors.InvalidArgument(f"unknown output {shown(unknown[0])}; this model has {LABEL!r} and "
                                          f"{PROBABILITIES!r}")
        n = len(rows)
        rid = check_text("id", request.id, MAX_ID)
        request_ids = [rid] if n == 1 else [f"{rid}-{i}" if rid else "" for i in range(n)]
        names = model.names
        # without a client id no row is an idempotency key: nothing to fingerprint, look up or claim
        hashes = keyed_hashes(model, request_ids, rows) if rid else None
        with self.keys.begin(model.name, request_ids, hashes, context.time_remaining()) if hashes else NO_CLAIM \
                as claim:
            if claim.conflicts:
                raise errors.AlreadyExists(claim.conflicts[min(claim.conflicts)])
            if not claim.stored:  # every row is scored now (always so without a client id)
                version = model.version
                probabilities, _ = score_and_record(
                    self.recorder, self.registry.metrics, model, rows, [zip(names, row) for row in rows],
                    request_ids, transport_of(context.invocation_metadata()), started, context.time_remaining(),
                    hashes)
            else:  # some rows answered before: their stored answers, in place
                version, classes, other = one_version(model, claim.stored, n - len(claim.stored))
                if other:
                    raise errors.FailedPrecondition(other[min(other)])
                assert hashes is not None  # rows answered before: the call had keys
                todo = [i for i in range(n) if i not in claim.stored]
                probabilities = np.zeros((n, len(classes)))
                for i, r in claim.stored.items():
                    probabilities[i] = [r.probabilities.get(c, 0.0) for c in classes]
                if todo:
                    probabilities[todo], _ = score_and_record(
                        self.recorder, self.registry.metrics, model, [rows[i] for i in todo],
                        [zip(names, rows[i]) for i in todo], [request_ids[i] for i in todo],
                        transport_of(context.invocation_metadata()), started, context.time_remaining(),
                        [hashes[i] for i in todo])
        response = pb.ModelInferResponse()
        response.CopyFrom(self._answer_head(model, tuple(wanted), probabilities.shape))
        response.id = rid
        response.model_version = version  # a stored answer's version, which a reload may have replaced
        probability_dtype = _probability_type(model)[1]
        response.raw_output_contents.extend([
            (probabilities.argmax(axis=1).astype("<i8") if name == LABEL
             else probabilities.astype(probability_dtype)).tobytes() for name in wanted])
        return response

    def _answer_head(self, model, wanted: tuple[str, ...], shape: tuple[int, ...]) -> pb.ModelInferResponse:
        """The part of a ModelInfer answer that depends only on the model, the outputs asked for and the shape of
        the probabilities (name, version, each output's name, datatype and shape). Copying it is cheaper than
        building it, so it is built once per combination and kept: per served model (a replaced model's go with
        it), at most the 4 lists of distinct outputs × row counts up to max_batch_rows; a list naming an output
        twice is answered as asked but not kept."""
        heads = self._heads.get(model)
        if heads is None:
            heads = self._heads[model] = {}
        key = (wanted, shape)
        head = heads.get(key)
        if head is None:
            head = pb.ModelInferResponse(model_name=model.name, model_version=model.version)
            probability_type = _probability_type(model)[0]
            for name in wanted:
                if name == LABEL:
                    head.outputs.add(name=name, datatype="INT64", shape=[shape[0]])
                else:
                    head.outputs.add(name=name, datatype=probability_type, shape=list(shape))
            if len(set(wanted)) == len(wanted):
                heads[key] = head
        return head

    def _rows(self, request, model) -> list[list]:
        """The request's rows, validated by the model's runtime, as lists of plain values in schema order (floats
        for an "array" model); INVALID_ARGUMENT on anything else."""
        if len(request.inputs) == 1 and request.inputs[0].name == INPUT and INPUT not in model.names:
            if any(f.kind != "number" for f in model.manifest.features):
                raise errors.InvalidArgument(
                    f"this model takes one input per feature, not {INPUT!r}: " + ", ".join(
                        f"{f.name} ({DATATYPE_OF_KIND[f.kind]})" for f in model.manifest.features))
            rows = self._matrix_rows(request, len(model.names))
            if not any(f.nullable for f in model.manifest.features):  # NaN is refused: the float fast path
                model.check_rows(rows)
                return rows
            return self._validated(model, [dict(zip(model.names, map(float_or_missing, row))) for row in rows])
        if len(request.inputs) == 1 and not _per_feature(model) and request.inputs[0].name not in model.names:
            raise errors.InvalidArgument(f"unknown input {shown(request.inputs[0].name)}; this model has one "
                                         f"input {INPUT!r} [N, {len(model.names)}] (or one input per feature: "
                                         f"{', '.join(model.names)})")
        return self._validated(model, self._column_rows(request, model.names, _booleans(model)))

    def _validated(self, model, mappings: list[dict]) -> list[list]:
        """Each row's values checked by the runtime against its feature (the same check and words as Predict)."""
        if len(mappings) == 1:
            return [model.vector(mappings[0])]
        return [model.vector(mapping, row=i) for i, mapping in enumerate(mappings)]

    def _column_rows(self, request, names: Sequence[str], booleans: frozenset[str]) -> list[dict]:
        """One tensor per feature → N rows of {feature: plain value}. A boolean feature sent as a numeric tensor
        (as FeatureMatrix carries it: 0 or 1, NaN missing; BOOL has no missing value) reads as bools."""
        known = set(names)
        seen: set[str] = set()
        n_rows = 0  # every input has N >= 1
        for tensor in request.inputs:
            if tensor.name not in known:
                raise errors.InvalidArgument(f"unknown input {shown(tensor.name)}; this model has one input per "
                                             f"feature: {', '.join(names)}")
            if tensor.name in seen:
                raise errors.InvalidArgument(f"input {shown(tensor.name)} appears twice")
            seen.add(tensor.name)
            n = column_rows(tensor, tensor.shape)
            if n_rows and n != n_rows:
                raise errors.InvalidArgument(f"input {shown(tensor.name)} has {n} rows; the inputs before it have "
                                             f"{n_rows}")
            n_rows = n
        missing = [name for name in names if name not in seen]
        if missing:
            raise errors.InvalidFeatures(f"feature {missing[0]!r} is missing; send one input per feature: "
                                         f"{', '.join(names)}")
        if n_rows > self.max_batch_rows:
            raise errors.TooManyRows(f"{n_rows} rows exceed the limit of {self.max_batch_rows} per request; "
                                     "split the request")
        raw = request.raw_input_contents
        if raw and len(raw) != len(request.inputs):
            raise errors.InvalidArgument(f"raw_input_contents holds {len(raw)} entries for {len(request.inputs)} "
                                         "inputs; send one per input, in the inputs' order")
        columns = {tensor.name: decode_column(tensor, raw[i] if raw else None, n_rows)
                   for i, tensor in enumerate(request.inputs)}
        for name in booleans & columns.keys():
            columns[name] = [_ZERO_ONE.get(v, v) if type(v) is float else v for v in columns[name]]
        return [{name: columns[name][i] for name in names} for i in range(n_rows)]

    def _matrix_rows(self, request, n_features: int) -> list[list[float]]:
        """The single input tensor as N rows of n_features floats; INVALID_ARGUMENT on anything else."""
        tensor = request.inputs[0]
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
             ready: Callable[[], bool], keys: Keys | None = None) -> None:
    """Add the OIP service to a grpc server (keys: the process's idempotency keys, shared with Predict*)."""
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(
        OipServicer(registry, recorder, max_batch_rows=max_batch_rows, ready=ready, keys=keys), server)
