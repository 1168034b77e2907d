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
