"""PostgreSQL's COPY text format for prediction rows: the writer's hot loop, formatted by hand."""
from __future__ import annotations

import io
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from itertools import chain, repeat
from operator import itemgetter

import numpy as np
import orjson

from database.connect import RejectedData
from database.models import to_datetime
from database.records import PredictionBatch, Stored, plain

_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
# the JSON of the jsonb columns: compact, refusing NaN/±inf (the INSERT fallback in repo.py uses it too)
to_json = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode
NULL = "\\N"  # COPY text's NULL (request_hash of a row with a fresh id)
_NUMBERS = frozenset((float, int))  # the value types a row template formats as JSON numbers (not bool: True)
# the value types the JSON encoder takes as they are (an int: a JSON number); anything else goes through plain (a
# numpy scalar becomes a Python value; a list or dict, no feature value, is a ValueError naming the feature)
_PLAIN_TYPES = frozenset((float, int, str, bool, type(None)))
# what jsonb refused and json (m0010) takes, as JSON escapes (not an escaped backslash followed by the letters): NUL,
# which no text column holds, and a lone UTF-16 surrogate (no character at all). A row holding one is refused here
# (the writer quarantines it alone), as the database refused it before.
_UNSTORABLE = re.compile(r"(?<!\\)(?:\\\\)*(?:\\u0000|\\ud[89ab][0-9a-f]{2}(?!\\ud[c-f][0-9a-f]{2})"
                         r"|(?<!\\ud[89ab][0-9a-f]{2})\\ud[c-f][0-9a-f]{2})")


def storable(json_text: str) -> str:
    """JSON text (the encoder's: lower-case escapes) as it is; RejectedData when a string in it (a key or a value)
    holds NUL or a lone surrogate, which PostgreSQL cannot store as text (jsonb refused them)."""
    if ("\\u0000" in json_text or "\\ud" in json_text) and _UNSTORABLE.search(json_text):
        raise RejectedData(f"a string holds NUL or a lone surrogate, which PostgreSQL does not store: "
                           f"{json_text[:200]}")
    return json_text


def _hash_text(request_hash: str | None) -> str:
    """A request_hash in COPY text: hex digits as they are, NULL for none."""
    return NULL if request_hash is None else request_hash.translate(_COPY_ESCAPES)


def features_json(features: Mapping[str, object]) -> str:
    """The JSON of a record's features: plain values as they are, NaN (a missing number) as null; ValueError for
    ±inf or a value that is not plain (see plain)."""
    if _PLAIN_TYPES.issuperset(map(type, features.values())):
        try:
            return to_json(features)
        except ValueError:  # NaN (missing) or ±inf: plain tells them apart
            pass
    return to_json({name: plain(value, name) for name, value in features.items()})


def copy_text(records: Sequence[Stored], claims: list[str] | None = None) -> io.StringIO:
    """The records (and bulk batches) in PostgreSQL's COPY text format (tab-separated, backslash escapes).

    The writer's hot loop, so each row is one %-format: a row template per (model, version, feature keys, class
    keys) with the JSON keys encoded and escaped once (float reprs are JSON numbers that need no escaping),
    strings escaped once per distinct value, timestamps formatted once per distinct value. A row with anything
    but finite numbers in its objects (a category, a boolean, a missing value, NaN/±inf) takes the JSON encoder
    (features_json: NaN is null, ±inf a ValueError; NaN/±inf probabilities a ValueError, as before).

    claims, when given, gets the rows' claims (m0014: prediction_id, created_at) in COPY text, as written for the
    rows, in pieces for claims_text (formatted in the same pass; a bulk batch's in one join, its ids in order)."""
    esc = _COPY_ESCAPES
    # the row template per shape, made once a row of that shape held numbers only (float or int, not bool)
    templates: dict[tuple, str] = {}
    texts: dict[str, str] = {}
    stamps: dict[float, str] = {}

    def text(value: str) -> str:
        out = texts.get(value)
        if out is None:
            out = texts[value] = value.translate(esc)
        return out

    def obj(keys, placeholder: str = "%r") -> str:
        return "{" + ",".join(storable(to_json(k)).translate(esc).replace("%", "%%") + ":" + placeholder
                              for k in keys) + "}"

    lines = []
    for r in records:
        if type(r) is PredictionBatch:
            lines.append(_batch_copy_text(r, text, obj, claims))
            continue
        features, probabilities = r.features, r.probabilities
        shape = (r.model, r.model_version, tuple(features), tuple(probabilities))
        template = templates.get(shape)
        stamp = stamps.get(r.created_at)
        if stamp is None:
            stamp = stamps[r.created_at] = str(to_datetime(r.created_at))
        if claims is not None:
            claims.append(f"{r.prediction_id.translate(esc)}\t{stamp}\n")
        try:
            # TypeError for a string or None (the values are typed as plain values: any of them may be one)
            total = sum(features.values()) + sum(probabilities.values())  # type: ignore[arg-type]
            numbers = total - total == 0.0  # False for NaN or ±inf somewhere
        except TypeError:
            numbers = False
        if numbers and template is None:
            # a boolean sums as a number but its repr (True) is no JSON, nor is a numpy scalar's. A model version's
            # features keep their kinds, so a shape's first row of numbers only tells for all its rows: the check
            # is made once. (A row breaking that would be refused by COPY, and repo.insert_predictions would
            # INSERT its batch instead, through the JSON encoder.)
            numbers = _NUMBERS.issuperset(map(type, features.values()))
            if numbers:
                template = templates[shape] = (f"%s\t%s\t%s\t%s\t{obj(shape[2])}\t%s\t{obj(shape[3])}\t%s\t%r"
                                               "\t%s\t%s\n")
        if not numbers or template is None:  # the JSON encoder: refuses NaN/±inf (ValueError), encodes the rest
            lines.append(f"{r.prediction_id.translate(esc)}\t{r.request_id.translate(esc)}\t{text(r.model)}\t"
                         f"{text(r.model_version)}\t{storable(features_json(features)).translate(esc)}\t"
                         f"{text(r.label)}\t{storable(to_json(probabilities)).translate(esc)}\t{text(r.transport)}\t"
                         f"{float(r.latency_ms)!r}\t{stamp}\t{_hash_text(r.request_hash)}\n")
            continue
        lines.append(template % (r.prediction_id.translate(esc), r.request_id.translate(esc), text(r.model),
                                 text(r.model_version), *features.values(), text(r.label), *probabilities.values(),
                                 text(r.transport), float(r.latency_ms), stamp, _hash_text(r.request_hash)))
    return io.StringIO("".join(lines))


def claims_text(claims: list[str]) -> io.StringIO:
    """The claims copy_text collected, as the COPY text of partitions.keys_copy_sql."""
    return io.StringIO("".join(claims))


def _batch_copy_text(b: PredictionBatch, text, obj, claims: list[str] | None = None) -> str:
    """A bulk batch's rows in COPY text: one row template with everything the rows share (model, version, JSON
    keys, transport, latency, timestamp) formatted in, repeated once per row and filled by ONE %-format over
    the rows' values (ids, feature values, labels, floats): no Python code runs per row of a float matrix. Rows
    with a non-finite probability or an infinite feature, or ids that need escaping, take the per-row path
    (which refuses NaN/±inf as before)."""
    ids = "".join(b.prediction_ids) + "".join(b.request_ids)
    b = in_index_order(b)
    columns = _feature_columns(b) if np.isfinite(b.probabilities).all() else None
    if columns is None or "\\" in ids or "\t" in ids or "\n" in ids or "\r" in ids:
        return copy_text(b.rows(), claims).getvalue()

    def const(value: str) -> str:
        return text(value).replace("%", "%%")

    # every value by %s: the feature and probability columns come as JSON text already (numbers_text, or JSON
    # text of other values from _json_column)
    stamp = str(to_datetime(b.created_at))
    if claims is not None and len(b):  # the ids need no escaping here (checked above), in order (in_index_order)
        claims.append(f"\t{stamp}\n".join(b.prediction_ids) + f"\t{stamp}\n")
    template = (f"%s\t%s\t{const(b.model)}\t{const(b.model_version)}\t{obj(b.feature_names, '%s')}\t%s\t"
                f"{obj(b.classes, '%s')}\t{const(b.transport)}\t{float(b.latency_ms)!r}\t"
                f"{stamp}\t%s\n")
    labels = [text(c) for c in b.classes]
    hashes = b.request_hashes if b.request_hashes is not None else repeat(NULL)
    values = chain.from_iterable(zip(b.prediction_ids, b.request_ids, *columns,
                                     map(labels.__getitem__, b.labels.tolist()), *text_columns(b.probabilities),
                                     hashes))
    return (template * len(b)) % tuple(values)


def in_index_order(b: PredictionBatch) -> PredictionBatch:
    """The batch's rows sorted by prediction_id. A batch's rows share created_at, so in this order each row's key in
    the page indexes ((…, created_at, prediction_id), migration m0006) follows the previous one's: PostgreSQL
    inserts it into the same (rightmost) leaf, mostly without descending the tree again, instead of at a random
    place among the batch's rows (measured: a third less database CPU per stored row). Only the order of the COPY
    changes: the rows, and the answers the caller already has, are the same."""
    ids = b.prediction_ids
    order = sorted(range(len(ids)), key=ids.__getitem__)
    if order == list(range(len(ids))):  # in order already (also every batch of 0 or 1 rows)
        return b
    take = itemgetter(*order)  # 2 rows or more: a tuple of them
    return replace(b, prediction_ids=list(take(ids)), request_ids=list(take(b.request_ids)),
                   features=b.features[order], labels=b.labels[order], probabilities=b.probabilities[order],
                   request_hashes=None if b.request_hashes is None else list(take(b.request_hashes)))


def _feature_columns(b: PredictionBatch) -> list[list] | None:
    """The batch's feature columns as values a %s makes JSON of: finite floats as they are, anything else as its
    JSON text escaped for COPY (a missing value, NaN included, as null). None when a float matrix holds ±inf
    (the per-row path refuses it); ValueError for a value that cannot be stored (see plain)."""
    matrix = b.features
    if matrix.dtype != object:
        finite = np.isfinite(matrix)
        if not finite.all() and not (finite | np.isnan(matrix)).all():
            return None
        if matrix.dtype.kind == "f":
            return text_columns(matrix)  # NaN (missing) as null
        return matrix.T.tolist()
    strings: dict[str, str] = {}  # categories repeat: each distinct one encoded once
    return [_json_column(name, column, strings) for name, column in zip(b.feature_names, matrix.T.tolist())]


def text_columns(matrix: np.ndarray) -> list[list[str]]:
    """A 2-D matrix of numbers (no ±inf) as JSON text, one list per column: each value the shortest text that reads
    back as the same double (the digits of Python's repr; orjson's Ryu in C, ~5x faster than a repr per value: a
    third of the writer's CPU on a batch went to these), NaN as null. The spelling of an exponent may differ from
    repr's (1e-05 is written 0.00001): the same JSON number."""
    rows, width = matrix.shape
    if not rows or not width:
        return [[] for _ in range(width)]
    values = np.ascontiguousarray(matrix, dtype=np.float64)
    flat = orjson.dumps(values, option=orjson.OPT_SERIALIZE_NUMPY).decode()[2:-2].replace("],[", ",").split(",")
    return [flat[j::width] for j in range(width)]


def _json_column(name: str, column: list, strings: dict[str, str]) -> list:
    """One column of plain values (an object matrix's) as %s-ready values (see _feature_columns)."""
    out: list = []
    append = out.append
    for value in column:
        kind = type(value)
        if kind is str:
            json_text = strings.get(value)
            if json_text is None:
                json_text = strings[value] = storable(to_json(value)).translate(_COPY_ESCAPES)
            append(json_text)
        elif kind is float and value - value == 0.0:
            append(value)
        elif value is None:
            append("null")
        elif kind is bool:
            append("true" if value else "false")
        else:  # NaN, ±inf, an int, a numpy scalar, or something that is not a feature value
            append(storable(to_json(plain(value, name))).translate(_COPY_ESCAPES))
    return out
