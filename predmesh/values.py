"""Feature values between Python and the contract's google.protobuf.Value: a number (numeric feature), a string
(category), a boolean or None (missing).

encode() is the one place the SDK turns what a caller passes into Values (predict, the rows of predict_batch /
predict_each / predict_stream, queue jobs); decode() turns a stored prediction's Values back into plain values.
"""
from __future__ import annotations

import numbers
from collections.abc import Mapping, MutableMapping
from typing import SupportsFloat

from google.protobuf.message import DecodeError, Message
from google.protobuf.struct_pb2 import NULL_VALUE, Value
from google.protobuf.unknown_fields import UnknownFieldSet

from predmesh.errors import BadArgument

# What a feature value may be: a number (int, float, or a numpy number), a str, a bool, None (missing), or a
# google.protobuf.Value sent as it is (e.g. a queue job's own values). SupportsFloat lets type checkers take numpy
# numbers (np.float32, np.int64, np.bool_: not float or int to them) without the SDK importing numpy; what else
# passes it (a Decimal) is refused at run time, naming the feature.
FeatureValue = float | int | str | bool | None | Value | SupportsFloat
# A feature value as the server checked and recorded it (and a stored prediction gives it back).
PlainValue = float | str | bool | None
Features = Mapping[str, FeatureValue]


def set_value(target: Value, value: object) -> bool:
    """Write a plain value into a Value in place; False when it is none of the accepted kinds."""
    if isinstance(value, float):
        target.number_value = value
    elif isinstance(value, bool) or getattr(getattr(value, "dtype", None), "kind", "") == "b":  # numpy bool_ too
        target.bool_value = bool(value)  # before numbers: a bool is an int
    elif isinstance(value, str):
        target.string_value = value
    elif value is None:
        target.null_value = NULL_VALUE
    elif isinstance(value, Value):
        target.CopyFrom(value)
    elif isinstance(value, numbers.Real):  # int, numpy integers and floats, fractions
        try:
            target.number_value = float(value)
        except OverflowError:  # an int beyond a double's range (about ±1.8e308)
            return False
    else:
        return False
    return True


def fill(target: MutableMapping[str, Value], features: Features, where: str = "features") -> None:
    """Add each feature of a mapping to a message's features map (in place, no intermediate messages); BadArgument
    naming the feature for a value that is not a number, string, boolean or None."""
    try:
        for name, value in features.items():
            if not set_value(target[name], value):
                raise TypeError(name)
    except (TypeError, ValueError, AttributeError, OverflowError):
        raise features_refused(features, where) from None


def encode(features: Features, where: str = "features") -> dict[str, Value]:
    """The features as Values by name; BadArgument naming the feature for an unsupported value."""
    out: dict[str, Value] = {}
    try:
        for name, value in features.items():
            key: object = name  # a caller may pass any mapping
            if not isinstance(key, str) or not set_value(v := Value(), value):
                raise TypeError(name)
            out[name] = v
    except (TypeError, ValueError, AttributeError, OverflowError):
        raise features_refused(features, where) from None
    return out


def features_refused(features: object, where: str = "features") -> BadArgument:
    """The BadArgument for features the contract cannot carry (not a mapping, a name that is not a string, a value
    that is not a number, string, boolean or None), naming the feature; called only once encoding failed."""
    if not isinstance(features, Mapping):
        return BadArgument(f"{where} is {type(features).__name__}; send a mapping of feature names to values")
    for name, value in features.items():
        if not isinstance(name, str):
            return BadArgument(f"{where}: the feature name {name!r} is not a string")
        if not set_value(Value(), value):
            if isinstance(value, numbers.Real):
                return BadArgument(f"{where}: feature {name!r} is a number too large for a double (beyond "
                                   "±1.8e308); send a finite number")
            return BadArgument(f"{where}: feature {name!r} is {value!r} ({type(value).__name__}); send a number, "
                               "a string (category), a boolean or None (missing)")
    return BadArgument(f"{where}: send a mapping of feature names to values")


def unreadable_features(message: Message) -> list[str]:
    """The names of the features a message (PredictRequest, FeatureRow, PredictStreamRequest) carries in entries
    protobuf could not read into its features map, so kept them as unknown fields: what a client built for predmesh
    0.2 sends (each value a double, not a google.protobuf.Value). Empty for any message of this contract."""
    number = message.DESCRIPTOR.fields_by_name["features"].number
    entry = getattr(type(message), "FeaturesEntry")  # noqa: B009  # the map's entry class, generated at run time
    names = []
    unknown = UnknownFieldSet(message)
    for field in (unknown[i] for i in range(len(unknown))):  # indexable (the stubs declare no __iter__)
        if field.field_number == number and field.wire_type == 2:
            try:
                names.append(entry.FromString(field.data).key)
            except DecodeError:
                names.append("")
    return names


def upgrade_message(name: str) -> str:
    """Why a feature sent as a predmesh 0.2 client sends it (a double) is refused."""
    shown = name if len(name) <= 64 else name[:64] + "…"
    return (f"feature {shown!r} has no value (its entry holds no google.protobuf.Value: a client built for "
            "predmesh 0.2 sends doubles; upgrade it)")


def decode(value: Value) -> PlainValue:
    """A Value as a plain value: number → float, string → str, bool, null (or no value) → None."""
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        return value.number_value
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    return None


def decode_all(features: Mapping[str, Value]) -> dict[str, PlainValue]:
    """A features map of Values as plain values by name."""
    return {name: decode(value) for name, value in features.items()}
