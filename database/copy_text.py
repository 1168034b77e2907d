"""PostgreSQL's COPY text format for prediction rows: the writer's hot loop, formatted by hand."""
from __future__ import annotations

import io
import json
from collections.abc import Sequence
from itertools import chain

import numpy as np

from database.models import to_datetime
from database.records import PredictionBatch, Stored

_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
# the JSON of the jsonb columns: compact, refusing NaN/±inf (the INSERT fallback in repo.py uses it too)
to_json = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


def copy_text(records: Sequence[Stored]) -> io.StringIO:
    """The records (and bulk batches) in PostgreSQL's COPY text format (tab-separated, backslash escapes).

    The writer's hot loop, so each row is one %-format: a row template per (feature keys, class keys) with the
    JSON keys encoded and escaped once (float reprs are JSON numbers that need no escaping), strings escaped once
    per distinct value, timestamps formatted once per distinct value. A row with anything but finite numbers in
    its objects takes the JSON encoder (which refuses NaN/±inf with ValueError, as before)."""
    esc = _COPY_ESCAPES
    templates: dict[tuple, str] = {}
    texts: dict[str, str] = {}
    stamps: dict[float, str] = {}

    def text(value: str) -> str:
        out = texts.get(value)
        if out is None:
            out = texts[value] = value.translate(esc)
        return out

    def obj(keys) -> str:
        return "{" + ",".join(to_json(k).translate(esc).replace("%", "%%") + ":%r" for k in keys) + "}"

    lines = []
    for r in records:
        if type(r) is PredictionBatch:
            lines.append(_batchcopy_text(r, text, obj))
            continue
        features, probabilities = r.features, r.probabilities
        shape = (tuple(features), tuple(probabilities))
        template = templates.get(shape)
        if template is None:
            template = templates[shape] = f"%s\t%s\t%s\t%s\t{obj(shape[0])}\t%s\t{obj(shape[1])}\t%s\t%r\t%s\n"
        stamp = stamps.get(r.created_at)
        if stamp is None:
            stamp = stamps[r.created_at] = str(to_datetime(r.created_at))
        try:
            total = sum(features.values()) + sum(probabilities.values())
            numbers = total - total == 0.0  # False for NaN or ±inf somewhere
        except TypeError:
            numbers = False
        if not numbers:  # the JSON encoder: it refuses NaN/±inf (ValueError), encodes anything else it can
            lines.append(f"{r.prediction_id.translate(esc)}\t{r.request_id.translate(esc)}\t{text(r.model)}\t"
                         f"{text(r.model_version)}\t{to_json(features).translate(esc)}\t{text(r.label)}\t"
                         f"{to_json(probabilities).translate(esc)}\t{text(r.transport)}\t"
                         f"{float(r.latency_ms)!r}\t{stamp}\n")
            continue
        lines.append(template % (r.prediction_id.translate(esc), r.request_id.translate(esc), text(r.model),
                                 text(r.model_version), *features.values(), text(r.label), *probabilities.values(),
                                 text(r.transport), float(r.latency_ms), stamp))
    return io.StringIO("".join(lines))


def _batchcopy_text(b: PredictionBatch, text, obj) -> str:
    """A bulk batch's rows in COPY text: one row template with everything the rows share (model, version, JSON
    keys, transport, latency, timestamp) formatted in, repeated once per row and filled by ONE %-format over
    the rows' values (ids, floats, labels): no Python code runs per row. Rows with a non-finite number, or ids
    that need escaping, take the per-row path (which refuses NaN/±inf as before)."""
    ids = "".join(b.prediction_ids) + "".join(b.request_ids)
    if (not (np.isfinite(b.features).all() and np.isfinite(b.probabilities).all())
            or "\\" in ids or "\t" in ids or "\n" in ids or "\r" in ids):
        return copy_text(b.rows()).getvalue()

    def const(value: str) -> str:
        return text(value).replace("%", "%%")

    template = (f"%s\t%s\t{const(b.model)}\t{const(b.model_version)}\t{obj(b.feature_names)}\t%s\t"
                f"{obj(b.classes)}\t{const(b.transport)}\t{float(b.latency_ms)!r}\t"
                f"{to_datetime(b.created_at)!s}\n")
    labels = [text(c) for c in b.classes]
    values = chain.from_iterable(zip(b.prediction_ids, b.request_ids, *b.features.T.tolist(),
                                     map(labels.__getitem__, b.labels.tolist()), *b.probabilities.T.tolist()))
    return (template * len(b)) % tuple(values)
