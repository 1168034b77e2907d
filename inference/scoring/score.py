"""Score validated rows and record one prediction per row: the one path every transport takes (Predict*, OIP
ModelInfer), shared by the servicers so none of them depends on another.

The finish/commit contract (see Batcher.score): the rows are scored in whatever batch the model's batcher forms;
the thread that scores the batch builds every caller's records (finish) and hands the whole batch's records to
the recorder in one call (commit = Recorder.record: one hand-off, and in durable persistence one fsync) BEFORE any
caller of the batch is woken. So when score_and_record returns, its records are accepted by the recorder (queued,
or durable); when the recorder refuses them (Overloaded: the spool is full) every caller of the batch fails and no
answer is given without a record. A caller whose deadline passes while its batch is scored gets DeadlineExceeded
even though its records were committed (prediction_ids are derived from request_ids, so a retry is idempotent).
"""
from __future__ import annotations

import time
from itertools import repeat

import numpy as np

from database.records import PredictionBatch, PredictionRecord
from inference.recording.recorder import Recorder
from inference.scoring.convert import ids, prediction_ids


def score_and_record(recorder: Recorder, metrics, model, matrix, rows, request_ids, transport: str,
                     started: float, timeout: float | None, hashes=None) -> tuple[np.ndarray, list[PredictionRecord]]:
    """Score rows of one model and record them; returns (probabilities, records), one record per row.

    matrix holds the rows' values in schema order (lists of plain values, or a matrix), already checked; rows the
    same rows as feature mappings (or (name, value) pairs) of plain values (float, str, bool, None), as recorded;
    request_ids one (bounded) client id per row, "" for none; hashes each row's fingerprint (None for a row
    without a client id; no argument: none has one);
    started the perf_counter() at which the call arrived (the recorded latency); timeout the caller's remaining
    deadline in seconds. Raises Overloaded when the recorder refuses the records, DeadlineExceeded after timeout.
    """
    classes, version, name = model.classes, model.version, model.name
    positions = range(len(classes))

    def finish(probabilities):
        latency_ms = (time.perf_counter() - started) * 1000
        now = time.time()
        records = []
        for features, rid, probs, rhash in zip(rows, request_ids, probabilities.tolist(),
                                               hashes if hashes is not None else repeat(None)):
            request_id, prediction_id = ids(rid)
            best = max(positions, key=probs.__getitem__)  # as argmax: max keeps the first of equal maxima
            records.append(PredictionRecord(
                prediction_id=prediction_id, request_id=request_id, model=name, model_version=version,
                features=dict(features), label=classes[best], probabilities=dict(zip(classes, probs)),
                transport=transport, latency_ms=latency_ms, created_at=now, request_hash=rhash))
        return records

    probabilities, records = model.score(matrix, timeout=timeout, finish=finish, commit=recorder.record)
    metrics.predicted(name, version, transport, [r.label for r in records])
    return probabilities, records


def score_and_record_matrix(recorder: Recorder, metrics, model, matrix: np.ndarray, request_ids: list[str],
                            transport: str, started: float, timeout: float | None,
                            hashes: list[str] | None = None, ids_of_rows: list[str] | None = None
                            ) -> tuple[np.ndarray, np.ndarray, PredictionBatch]:
    """score_and_record for rows in columns (the bulk path): the rows are recorded as one PredictionBatch instead
    of a record per row, under the same finish/commit contract. matrix is n × features in schema order, already
    checked; request_ids one per row (not empty); hashes their fingerprints when the client sent them;
    ids_of_rows their prediction_ids when the caller has them (else derived here). Returns (probabilities, label
    indexes, the batch)."""
    classes, version, name = model.classes, model.version, model.name
    ids_of_rows = prediction_ids(request_ids) if ids_of_rows is None else ids_of_rows

    def finish(probabilities):
        labels = probabilities.argmax(axis=1)  # the first of equal maxima, like the per-row path
        return [PredictionBatch(
            prediction_ids=ids_of_rows, request_ids=request_ids, model=name, model_version=version,
            feature_names=tuple(model.names), features=matrix, classes=tuple(classes), labels=labels,
            probabilities=probabilities, transport=transport, latency_ms=(time.perf_counter() - started) * 1000,
            created_at=time.time(), request_hashes=hashes)]

    probabilities, (batch,) = model.score(matrix, timeout=timeout, finish=finish, commit=recorder.record)
    metrics.predicted_counts(name, version, transport, dict(zip(classes, np.bincount(
        batch.labels, minlength=len(classes)).tolist())))
    return probabilities, batch.labels, batch
