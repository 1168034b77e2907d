"""The categorical model set of bench/compare_mlserver.py: Palmer penguins (the `palmerpenguins` package's CSV:
numbers with gaps, island and sex as string categories, three string classes) through a one-hot +
HistGradientBoosting pipeline, fitted once here and served by both servers.

predmesh gets it the way a user brings a fitted model (`predmesh import`'s code path: skops, schema from
feature_names_in_ and the sample, a "frame" model); MLServer the same fitted object (joblib) in its scikit-learn
runtime with the pandas content type ("pd": the request becomes a DataFrame, one column per input; BYTES inputs
carry content_type "str" so that its codec hands the pipeline str, not bytes). Each request is one penguin row over
OIP ModelInfer, one tensor per column: BYTES for island and sex, FP64 for the numbers.
"""
from __future__ import annotations

import importlib.resources
from pathlib import Path
from typing import Any

MODEL = "penguins-hgb"
TARGET = "species"
CATEGORIES = ("island", "sex")
NUMBERS = ("bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g", "year")
FEATURES = ("island", "bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g", "sex", "year")
# One penguin (the CSV's first complete row): what every request of the benchmark carries.
ROW: dict[str, Any] = {"island": "Torgersen", "bill_length_mm": 39.1, "bill_depth_mm": 18.7,
                       "flipper_length_mm": 181.0, "body_mass_g": 3750.0, "sex": "male", "year": 2007.0}


def csv_path() -> Path:
    return Path(str(importlib.resources.files("palmerpenguins") / "data" / "penguins.csv"))


def fit():
    """One-hot encoding of island and sex (a missing sex is its own category; an unseen one all zeros) ahead of a
    HistGradientBoostingClassifier at its defaults; the numbers passed through (it handles their NaN)."""
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    table = pd.read_csv(csv_path())
    columns = ColumnTransformer([
        ("categories", OneHotEncoder(handle_unknown="ignore", sparse_output=False), list(CATEGORIES)),
        ("numbers", "passthrough", list(NUMBERS)),
    ])
    pipeline = Pipeline([("columns", columns), ("classifier", HistGradientBoostingClassifier(random_state=0))])
    return pipeline.fit(table[list(FEATURES)], table[TARGET])


def store(store_root: Path, work: Path) -> tuple[Any, Any]:
    """Fit the pipeline, import it into the predmesh store as `predmesh import` does (skops file + the CSV as
    the sample, target given); returns (fitted pipeline, manifest)."""
    from inference.models.importer import import_model
    from inference.models.loader import dump_estimator
    from inference.models.store import ModelStore

    pipeline = fit()
    skops_file = work / f"{MODEL}.skops"
    skops_file.write_bytes(dump_estimator(pipeline))
    manifest = import_model(ModelStore(store_root), MODEL, skops_file, csv_path(), target=TARGET)
    if manifest.input != "frame":
        raise SystemExit(f"{MODEL} imported as an {manifest.input!r} model; expected 'frame'")
    return pipeline, manifest


def expected(pipeline, manifest) -> list[float]:
    """The pipeline's own predict_proba for ROW, from the DataFrame the server builds (frame.to_frame)."""
    from inference.models.frame import to_frame

    frame = to_frame([[ROW[f.name] for f in manifest.features]], manifest.features)
    return [float(p) for p in pipeline.predict_proba(frame)[0]]


def oip_request(*, mlserver: bool) -> bytes:
    """One row, one tensor per column ([1, 1]; typed contents). MLServer's request also says how to decode it
    (pandas for the request, str for each BYTES column) and asks for predict and predict_proba, its outputs."""
    from predmesh.oip import grpc_predict_v2_pb2 as pb

    tensor = pb.ModelInferRequest.InferInputTensor
    str_type = {"content_type": pb.InferParameter(string_param="str")} if mlserver else {}
    inputs = [tensor(name=n, datatype="BYTES", shape=[1, 1], parameters=str_type,
                     contents=pb.InferTensorContents(bytes_contents=[ROW[n].encode()]))
              if n in CATEGORIES else
              tensor(name=n, datatype="FP64", shape=[1, 1], contents=pb.InferTensorContents(fp64_contents=[ROW[n]]))
              for n in FEATURES]
    if not mlserver:
        return pb.ModelInferRequest(model_name=MODEL, inputs=inputs).SerializeToString()
    return pb.ModelInferRequest(
        model_name=MODEL, inputs=inputs, parameters={"content_type": pb.InferParameter(string_param="pd")},
        outputs=[pb.ModelInferRequest.InferRequestedOutputTensor(name=n) for n in ("predict", "predict_proba")],
    ).SerializeToString()


def probabilities(raw_response: bytes, name: str) -> list[float]:
    """The probabilities output (`name`) of a ModelInferResponse, raw or typed contents."""
    import numpy as np

    from predmesh.oip import grpc_predict_v2_pb2 as pb

    answer = pb.ModelInferResponse.FromString(raw_response)
    for i, output in enumerate(answer.outputs):
        if output.name == name:
            if answer.raw_output_contents:
                dtype = "<f8" if output.datatype == "FP64" else "<f4"
                return np.frombuffer(answer.raw_output_contents[i], dtype=dtype).tolist()
            return list(output.contents.fp64_contents or output.contents.fp32_contents)
    raise SystemExit(f"no output {name!r} in the answer (outputs: {[o.name for o in answer.outputs]})")


def mlserver_settings(classes: int) -> dict[str, Any]:
    """MLServer's model settings for the pipeline: the pandas content type for the model, str for its BYTES
    inputs (so a client that cannot set request parameters, perf_analyzer, is decoded the same way)."""
    return {
        "inputs": [{"name": n, "datatype": "BYTES", "shape": [-1, 1], "parameters": {"content_type": "str"}}
                   if n in CATEGORIES else {"name": n, "datatype": "FP64", "shape": [-1, 1]} for n in FEATURES],
        # str: its species labels as UTF-8 (its NumPy codec fails on str labels over gRPC: "expected bytes")
        "outputs": [{"name": "predict", "datatype": "BYTES", "shape": [-1, 1], "parameters": {"content_type": "str"}},
                    {"name": "predict_proba", "datatype": "FP64", "shape": [-1, classes]}],
        "parameters": {"uri": "./model.joblib", "version": "v1", "content_type": "pd"},
    }


def mlserver_model_config(max_batch: int, classes: int) -> bytes:
    """Triton's ModelConfigResponse for MLServer's signature above (perf_analyzer asks for it first)."""
    from predmesh.oip import grpc_predict_v2_pb2 as pb

    inputs = [pb.ModelInput(name=n, data_type=pb.TYPE_STRING if n in CATEGORIES else pb.TYPE_FP64, dims=[1])
              for n in FEATURES]
    return pb.ModelConfigResponse(config=pb.ModelConfig(
        name=MODEL, platform="mlserver_sklearn", max_batch_size=max(max_batch, 1), input=inputs,
        output=[pb.ModelOutput(name="predict", data_type=pb.TYPE_STRING, dims=[1]),
                pb.ModelOutput(name="predict_proba", data_type=pb.TYPE_FP64, dims=[classes])])).SerializeToString()


def perf_analyzer_records() -> list[dict[str, list]]:
    """perf_analyzer's --input-data for ROW: one list per input (strings for BYTES)."""
    return [{n: [ROW[n]] for n in FEATURES}]


def rest_body() -> dict[str, Any]:
    """MLServer's V2 REST request for ROW: the same columns, the same content types, as JSON."""
    return {"parameters": {"content_type": "pd"},
            "inputs": [{"name": n, "shape": [1, 1], "datatype": "BYTES", "data": [ROW[n]],
                        "parameters": {"content_type": "str"}} if n in CATEGORIES else
                       {"name": n, "shape": [1, 1], "datatype": "FP64", "data": [ROW[n]]} for n in FEATURES],
            "outputs": [{"name": "predict"}, {"name": "predict_proba"}]}
