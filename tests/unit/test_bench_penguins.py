"""The categorical benchmark's requests (bench/penguins.py): predmesh's OIP decoder reads the penguin back as the
row, and MLServer's request says how its pandas codec must decode each column."""
from __future__ import annotations

import pytest

from bench import penguins
from inference.rpc.tensors import column_rows, decode_column
from predmesh.oip import grpc_predict_v2_pb2 as pb


def test_predmesh_request_decodes_to_the_row():
    request = pb.ModelInferRequest.FromString(penguins.oip_request(mlserver=False))
    assert request.model_name == penguins.MODEL
    assert [t.name for t in request.inputs] == list(penguins.FEATURES)
    decoded = {t.name: decode_column(t, None, column_rows(t, t.shape)) for t in request.inputs}
    assert decoded == {name: [value] for name, value in penguins.ROW.items()}
    assert {t.name: t.datatype for t in request.inputs if t.datatype == "BYTES"}.keys() == set(penguins.CATEGORIES)
    assert not request.outputs and not request.parameters


def test_mlserver_request_asks_for_pandas_and_str_columns():
    request = pb.ModelInferRequest.FromString(penguins.oip_request(mlserver=True))
    assert request.parameters["content_type"].string_param == "pd"
    for tensor in request.inputs:
        wanted = "str" if tensor.name in penguins.CATEGORIES else None
        got = tensor.parameters["content_type"].string_param if "content_type" in tensor.parameters else None
        assert got == wanted, tensor.name
    assert [o.name for o in request.outputs] == ["predict", "predict_proba"]


@pytest.mark.parametrize("mlserver", [False, True])
def test_probabilities_read_raw_and_typed_outputs(mlserver):
    import numpy as np

    name = "predict_proba" if mlserver else "probabilities"
    values = [0.5, 0.25, 0.25]
    raw = pb.ModelInferResponse(outputs=[pb.ModelInferResponse.InferOutputTensor(name=name, datatype="FP64")],
                                raw_output_contents=[np.asarray(values, "<f8").tobytes()])
    typed = pb.ModelInferResponse(outputs=[pb.ModelInferResponse.InferOutputTensor(
        name=name, datatype="FP64", contents=pb.InferTensorContents(fp64_contents=values))])
    for answer in (raw, typed):
        assert penguins.probabilities(answer.SerializeToString(), name) == values
