"""A standard Triton client (tritonclient.grpc) works unchanged against a real predmesh server process.

The client runs in its own interpreter: tritonclient's generated `inference` messages and predmesh.oip's share
full names, so one process cannot import both (protobuf's descriptor pool refuses duplicates).
"""
from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = r"""
import json, sys
import numpy as np
import tritonclient.grpc as tc
from tritonclient.utils import InferenceServerException

client = tc.InferenceServerClient(sys.argv[1])
out = {"live": client.is_server_live(), "ready": client.is_server_ready(),
       "model_ready": client.is_model_ready("iris"), "unknown_ready": client.is_model_ready("nope")}
meta = client.get_model_metadata("iris", as_json=True)
out["inputs"] = [(t["name"], t["datatype"], [int(s) for s in t["shape"]]) for t in meta["inputs"]]
config = client.get_model_config("iris", as_json=True)["config"]
out["config"] = {"max_batch_size": config.get("max_batch_size"), "input": config["input"][0]["name"],
                 "data_type": config["input"][0]["data_type"], "dims": config["input"][0]["dims"]}
x = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], dtype=np.float32)
tensor = tc.InferInput("input", list(x.shape), "FP32")
tensor.set_data_from_numpy(x)
result = client.infer("iris", [tensor], request_id="triton-1")
out["labels"] = result.as_numpy("label").tolist()
out["probabilities"] = result.as_numpy("probabilities").tolist()
out["id"] = result.get_response().id
int_tensor = tc.InferInput("input", [1, 4], "INT32")
int_tensor.set_data_from_numpy(np.array([[5, 3, 1, 0]], dtype=np.int32))
errors = {}
for name, model, inputs in (("unknown_model", "nope", [tensor]), ("wrong_dtype", "iris", [int_tensor])):
    try:
        client.infer(model, inputs)
        errors[name] = "OK"
    except InferenceServerException as exc:
        errors[name] = exc.status()
out["errors"] = errors
print(json.dumps(out))
"""


def test_tritonclient_works_unchanged(server_proc):
    done = subprocess.run([sys.executable, "-c", SCRIPT, server_proc.target], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["live"] and out["ready"] and out["model_ready"] and not out["unknown_ready"]
    assert out["inputs"] == [["input", "FP32", [-1, 4]]]
    assert out["config"] == {"max_batch_size": 1000, "input": "input", "data_type": "TYPE_FP32", "dims": ["4"]}
    assert out["labels"] == [0, 2] and out["id"] == "triton-1"
    assert [round(sum(p), 5) for p in out["probabilities"]] == [1.0, 1.0]
    assert out["errors"] == {"unknown_model": "StatusCode.NOT_FOUND", "wrong_dtype": "StatusCode.INVALID_ARGUMENT"}


TYPED_SCRIPT = r"""
import json, sys
import numpy as np
import tritonclient.grpc as tc
from tritonclient.utils import InferenceServerException

client = tc.InferenceServerClient(sys.argv[1])
rows = json.loads(sys.argv[2])
meta = client.get_model_metadata("churn", as_json=True)
out = {"inputs": [(t["name"], t["datatype"], [int(s) for s in t["shape"]]) for t in meta["inputs"]],
       "outputs": [(t["name"], t["datatype"]) for t in meta["outputs"]]}


def column(name, datatype, values):
    if datatype == "BYTES":  # a string column, as Triton sends it: 4-byte length prefixes in raw_input_contents
        data = np.array([["" if v is None else v] for v in values], dtype=np.object_)
    elif datatype == "BOOL":
        data = np.array([[v] for v in values], dtype=bool)
    else:
        data = np.array([[np.nan if v is None else v] for v in values], dtype=np.float64)
    tensor = tc.InferInput(name, list(data.shape), datatype)
    tensor.set_data_from_numpy(data)
    return tensor


def inputs(rows, types):
    return [column(name, types.get(name, datatype), [row[i] for row in rows])
            for i, (name, datatype, _) in enumerate(out["inputs"])]


result = client.infer("churn", inputs(rows, {}), request_id="typed-1")
out["probabilities"] = result.as_numpy("probabilities").tolist()
out["labels"] = result.as_numpy("label").tolist()
# a missing boolean: BOOL has no missing value, so the column goes as FP64 0/1 with NaN
missing_bool = json.loads(sys.argv[3])
out["missing_bool"] = client.infer("churn", inputs(missing_bool, {"senior": "FP64"})).as_numpy(
    "probabilities").tolist()
errors = {}
for case, model, bad_rows, types in (
        ("string_for_number", "churn", [["12", 50.0, "One year", True]], {"tenure": "BYTES"}),
        ("number_for_category", "churn", [[1.0, 50.0, 2.0, True]], {"contract": "FP64"}),
        ("missing_monthly", "strict", [[1.0, None, "One year", True]], {}),
        ("unknown_category", "strict", [[1.0, 50.0, "Ten year", True]], {})):
    try:
        client.infer(model, inputs(bad_rows, types))
        errors[case] = "OK"
    except InferenceServerException as exc:
        errors[case] = [exc.status(), exc.message()]
out["errors"] = errors
print(json.dumps(out))
"""


def test_tritonclient_sends_typed_columns(model_store, tmp_path):
    """A table with a category (BYTES), a boolean (BOOL) and missing values (NaN, empty string), through Triton's
    own client against a real server process: the pipeline's own probabilities, and the runtime's refusals."""
    import numpy as np

    from inference.models.frame import to_frame
    from tests.support.procs import ServerProc
    from tests.support.typed_model import write_typed_model
    from tests.support.typed_strict import write_strict_model

    manifest, pipeline = write_typed_model(model_store)
    write_strict_model(model_store)
    rows: list[list[object]] = [
        [1.0, 29.85, "Month-to-month", False], [None, 56.95, "One year", True], [45.0, 42.3, None, False],
        [70.0, 99.5, "Two year", True], [5.0, 20.0, "Ten year", False]]  # the last an unseen category
    missing_bool: list[list[object]] = [[3.0, 60.0, "One year", None], [12.0, 30.0, None, True]]
    with ServerProc(model_store, tmp_path / "server.log") as server:
        done = subprocess.run([sys.executable, "-c", TYPED_SCRIPT, server.target, json.dumps(rows),
                               json.dumps(missing_bool)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["inputs"] == [["tenure", "FP64", [-1, 1]], ["monthly", "FP64", [-1, 1]],
                             ["contract", "BYTES", [-1, 1]], ["senior", "BOOL", [-1, 1]]]
    assert out["outputs"] == [["label", "INT64"], ["probabilities", "FP64"]]
    expected = pipeline.predict_proba(to_frame(rows, manifest.features))
    assert np.abs(np.array(out["probabilities"]) - expected).max() <= 1e-9
    assert out["labels"] == expected.argmax(axis=1).tolist()
    expected_missing = pipeline.predict_proba(to_frame(missing_bool, manifest.features))
    assert np.abs(np.array(out["missing_bool"]) - expected_missing).max() <= 1e-9
    errors = out["errors"]
    assert {case: status for case, (status, _) in errors.items()} == dict.fromkeys(
        ("string_for_number", "number_for_category", "missing_monthly", "unknown_category"),
        "StatusCode.INVALID_ARGUMENT")
    assert "feature 'tenure' is a number; got the string '12'" in errors["string_for_number"][1]
    assert "feature 'contract' is categorical" in errors["number_for_category"][1]
    assert "feature 'monthly' is missing (null)" in errors["missing_monthly"][1]
    assert "feature 'contract' has no category 'Ten year'" in errors["unknown_category"][1]
