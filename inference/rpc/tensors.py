"""Open Inference Protocol tensors → plain feature values (inference/models/frame.py): one tensor per feature, as
Triton's and MLServer's clients send a table's columns.

A column is a tensor named after its feature, of shape [N] or [N, 1]: a number as FP64, FP32, FP16 (raw only) or
an INT*/UINT* type (NaN = missing), a category as BYTES (UTF-8; an empty element = missing), a boolean as BOOL (or,
to send a missing one, a numeric tensor of 0 and 1 with NaN missing, as FeatureMatrix carries booleans). The
data comes either as raw_input_contents (one entry per input, in the inputs' order; BYTES elements each behind a
4-byte little-endian length, BOOL one byte 0 or 1 each) or as the typed contents. Here only the wire is checked
(shape, element count, encoding); what a value may be for its feature is the runtime's check, the same on every
transport, so a BYTES tensor for a number is refused there with the same words as a JSON string.
"""
from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

from inference import errors
from inference.bounds import shown

# Numeric datatypes: the little-endian dtype of their raw bytes and the typed-contents field they come in.
_NUMBERS: dict[str, tuple[np.dtype[Any], str | None]] = {
    "FP64": (np.dtype("<f8"), "fp64_contents"), "FP32": (np.dtype("<f4"), "fp32_contents"),
    "FP16": (np.dtype("<f2"), None),
    "INT64": (np.dtype("<i8"), "int64_contents"), "INT32": (np.dtype("<i4"), "int_contents"),
    "INT16": (np.dtype("<i2"), "int_contents"), "INT8": (np.dtype("i1"), "int_contents"),
    "UINT64": (np.dtype("<u8"), "uint64_contents"), "UINT32": (np.dtype("<u4"), "uint_contents"),
    "UINT16": (np.dtype("<u2"), "uint_contents"), "UINT8": (np.dtype("u1"), "uint_contents"),
}
DATATYPES = (*_NUMBERS, "BOOL", "BYTES")
# What ModelMetadata declares for each feature kind (Manifest Feature.kind).
DATATYPE_OF_KIND = {"number": "FP64", "category": "BYTES", "boolean": "BOOL"}
_LENGTH = struct.Struct("<I")


def column_rows(tensor, shape: Sequence[int]) -> int:
    """N for a feature column's shape [N] or [N, 1]; INVALID_ARGUMENT otherwise."""
    if (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)) and shape[0] >= 1:
        return int(shape[0])
    raise errors.InvalidArgument(f"input {shown(tensor.name)} has shape {list(shape)}; a feature's input is "
                                 "[N] or [N, 1] with N >= 1")


def decode_column(tensor, raw: bytes | None, n: int) -> list[object]:
    """The n values of one feature's tensor as plain values: float (or None for NaN) for a numeric datatype, str
    (None for an empty element) for BYTES, bool for BOOL. raw is the tensor's raw_input_contents entry, or None
    when the request uses typed contents."""
    datatype, name = tensor.datatype, shown(tensor.name)
    if datatype == "BYTES":
        items = _bytes_items(name, raw) if raw is not None else list(tensor.contents.bytes_contents)
        _check_count(name, len(items), n)
        return [_text(name, item, i, n) for i, item in enumerate(items)]
    if datatype == "BOOL":
        if raw is not None:
            _check_count(name, len(raw), n)
            if raw.strip(b"\x00\x01"):
                raise errors.InvalidArgument(f"input {name} (BOOL) holds a byte other than 0 or 1")
            return [byte == 1 for byte in raw]
        flags = tensor.contents.bool_contents
        _check_count(name, len(flags), n)
        return list(flags)
    spec = _NUMBERS.get(datatype)
    if spec is None:
        raise errors.InvalidArgument(f"input {name} has datatype {shown(datatype)}; send one of "
                                     f"{', '.join(DATATYPES)}")
    dtype, field = spec
    if raw is not None:
        if len(raw) != n * dtype.itemsize:
            raise errors.InvalidArgument(f"raw input {name} holds {len(raw)} bytes; {n} values of {datatype} "
                                         f"need {n * dtype.itemsize}")
        numbers: list = np.frombuffer(raw, dtype=dtype).tolist()
    elif field is None:
        raise errors.InvalidArgument(f"input {name} of datatype {datatype} must come as raw_input_contents")
    else:
        numbers = list(getattr(tensor.contents, field))
        _check_count(name, len(numbers), n)
    # ints become floats; NaN is the missing value of a number column
    return [None if value != value else float(value) for value in numbers]


def _check_count(name: str, count: int, n: int) -> None:
    if count != n:
        raise errors.InvalidArgument(f"input {name} holds {count} values; its shape needs {n}")


def _bytes_items(name: str, raw: bytes) -> list[bytes]:
    """Split raw BYTES contents: each element a 4-byte little-endian length, then that many bytes."""
    items, at, end = [], 0, len(raw)
    while at < end:
        if at + 4 > end:
            raise errors.InvalidArgument(f"raw input {name} (BYTES) ends inside an element's 4-byte length")
        (length,) = _LENGTH.unpack_from(raw, at)
        at += 4
        if at + length > end:
            raise errors.InvalidArgument(f"raw input {name} (BYTES) has an element of {length} bytes but only "
                                         f"{end - at} remain")
        items.append(raw[at:at + length])
        at += length
    return items


def _text(name: str, item: bytes, i: int, n: int) -> str | None:
    if not item:
        return None
    try:
        return item.decode("utf-8")
    except UnicodeDecodeError:
        where = f"row {i}: " if n > 1 else ""
        raise errors.InvalidFeatures(f"{where}feature {name} is not valid UTF-8; send a category as UTF-8 "
                                     "text") from None


def float_or_missing(value: float) -> float | None:
    """A float of a numeric matrix as a plain value: NaN is missing."""
    return None if math.isnan(value) else value
