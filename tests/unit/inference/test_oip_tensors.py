"""Decoding one OIP tensor per feature (inference/rpc/tensors.py): every datatype, raw and typed contents, and the
wire mistakes refused as INVALID_ARGUMENT naming the input."""
from __future__ import annotations

import struct

import numpy as np
import pytest

from inference import errors
from inference.rpc.tensors import column_rows, decode_column
from predmesh.oip import grpc_predict_v2_pb2 as pb


def tensor(name="contract", datatype="BYTES", shape=(2,)):
    return pb.ModelInferRequest.InferInputTensor(name=name, datatype=datatype, shape=list(shape))


def raw_bytes(*items: bytes) -> bytes:
    """Triton's BYTES serialisation: each element behind its 4-byte little-endian length."""
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def test_bytes_raw_and_typed_decode_to_text_empty_is_missing():
    assert decode_column(tensor(), raw_bytes(b"Month-to-month", "Zwei Jahre ü".encode()), 2) == [
        "Month-to-month", "Zwei Jahre ü"]
    typed = tensor(shape=(3, 1))
    typed.contents.bytes_contents.extend([b"One year", b"", b"Two year"])
    assert decode_column(typed, None, 3) == ["One year", None, "Two year"]
    assert decode_column(tensor(shape=(1,)), raw_bytes(b""), 1) == [None]


@pytest.mark.parametrize("datatype, values", [
    ("FP64", [1.5, float("nan"), -3.0]), ("FP32", [1.5, float("nan"), -3.0]), ("FP16", [1.5, float("nan"), -3.0]),
    ("INT64", [1, 0, -3]), ("INT32", [1, 0, -3]), ("INT16", [1, 0, -3]), ("INT8", [1, 0, -3]),
    ("UINT64", [1, 0, 3]), ("UINT32", [1, 0, 3]), ("UINT16", [1, 0, 3]), ("UINT8", [1, 0, 3]),
])
def test_numbers_raw_decode_to_floats_nan_is_missing(datatype, values):
    dtype = {"FP64": "<f8", "FP32": "<f4", "FP16": "<f2", "INT64": "<i8", "INT32": "<i4", "INT16": "<i2",
             "INT8": "i1", "UINT64": "<u8", "UINT32": "<u4", "UINT16": "<u2", "UINT8": "u1"}[datatype]
    got = decode_column(tensor("tenure", datatype, (3,)), np.array(values, dtype=dtype).tobytes(), 3)
    expected = [None if v != v else float(v) for v in values]
    assert got == expected and all(v is None or type(v) is float for v in got)


@pytest.mark.parametrize("datatype, field, values", [
    ("FP64", "fp64_contents", [0.1, float("nan")]), ("FP32", "fp32_contents", [0.5, 2.0]),
    ("INT64", "int64_contents", [2**40, -1]), ("INT32", "int_contents", [7, -7]), ("INT8", "int_contents", [1, 2]),
    ("UINT64", "uint64_contents", [2**63, 1]), ("UINT32", "uint_contents", [3, 4]),
])
def test_numbers_typed_contents(datatype, field, values):
    t = tensor("tenure", datatype, (2, 1))
    getattr(t.contents, field).extend(values)
    assert decode_column(t, None, 2) == [None if v != v else float(v) for v in values]


def test_bool_raw_and_typed():
    assert decode_column(tensor("senior", "BOOL", (3,)), b"\x01\x00\x01", 3) == [True, False, True]
    t = tensor("senior", "BOOL", (2,))
    t.contents.bool_contents.extend([False, True])
    assert decode_column(t, None, 2) == [False, True]


@pytest.mark.parametrize("t, raw, n, needle", [
    (tensor(), raw_bytes(b"a"), 2, "holds 1 values"),                          # element count
    (tensor(), raw_bytes(b"a", b"b", b"c"), 2, "holds 3 values"),
    (tensor(), raw_bytes(b"abc")[:-1], 1, "only 2 remain"),                    # truncated element
    (tensor(), raw_bytes(b"a") + b"\x01\x00", 2, "4-byte length"),             # truncated length prefix
    (tensor("senior", "BOOL", (2,)), b"\x01\x02", 2, "0 or 1"),
    (tensor("senior", "BOOL", (2,)), b"\x01", 2, "holds 1 values"),
    (tensor("tenure", "FP64", (2,)), b"\x00" * 12, 2, "12 bytes"),
    (tensor("tenure", "FP16", (1,)), None, 1, "raw_input_contents"),
    (tensor("tenure", "STRING", (1,)), b"", 1, "datatype"),
    (tensor("tenure", "BF16", (1,)), b"\x00\x00", 1, "datatype"),
])
def test_wire_mistakes_name_the_input(t, raw, n, needle):
    with pytest.raises(errors.InvalidArgument) as err:
        decode_column(t, raw, n)
    assert needle in str(err.value) and repr(t.name) in str(err.value)


def test_typed_count_mismatch():
    t = tensor("tenure", "FP64", (3,))
    t.contents.fp64_contents.extend([1.0, 2.0])
    with pytest.raises(errors.InvalidArgument, match="'tenure' holds 2 values"):
        decode_column(t, None, 3)


def test_invalid_utf8_is_invalid_features_naming_feature_and_row():
    with pytest.raises(errors.InvalidFeatures, match=r"row 1: feature 'contract' is not valid UTF-8"):
        decode_column(tensor(), raw_bytes(b"ok", b"\xc3\x28"), 2)
    with pytest.raises(errors.InvalidFeatures, match=r"^feature 'contract' is not valid UTF-8"):
        decode_column(tensor(shape=(1,)), raw_bytes(b"\xff"), 1)


@pytest.mark.parametrize("shape, rows", [([4], 4), ([4, 1], 4), ([1], 1)])
def test_column_shapes(shape, rows):
    assert column_rows(tensor(shape=shape), shape) == rows


@pytest.mark.parametrize("shape", [[], [0], [2, 2], [1, 1, 1], [-1], [3, 0]])
def test_bad_column_shapes(shape):
    with pytest.raises(errors.InvalidArgument, match=r"'contract' has shape"):
        column_rows(tensor(shape=shape), shape)
