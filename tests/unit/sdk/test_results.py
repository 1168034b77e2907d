"""Typed results leave the process that made them: a worker of a process pool returns them pickled."""
from __future__ import annotations

import copy
import pickle

from predmesh import InvalidArgument, ScoredMatrix
from predmesh.v1 import inference_pb2


def test_a_scored_matrix_pickles_and_copies_with_its_columns_and_row_errors():
    # its columns are views of the protobuf message: pickling one raised "can't pickle repeated message fields"
    m = inference_pb2.PredictionMatrix(model="iris", model_version="2", classes=["a", "b"], labels=[1, 0],
                                       probabilities=[0.1, 0.9, 0.0, 0.0], prediction_ids=["p1", ""], latency_ms=1.5)
    error = m.row_errors.add(row=1).error
    error.code, error.message = 3, "feature 'x' is nan; send a finite number"
    scored = ScoredMatrix.from_proto(m)
    for back in (pickle.loads(pickle.dumps(scored)), copy.deepcopy(scored)):
        assert (back.model, back.model_version, back.classes, back.latency_ms, len(back)) == ("iris", "2", ("a", "b"),
                                                                                             1.5, 2)
        assert list(back.labels) == [1, 0] and list(back.probabilities) == [0.1, 0.9, 0.0, 0.0]
        assert list(back.prediction_ids) == ["p1", ""] and back.raw == m
        [(row, err)] = back.errors.items()
        assert row == 1 and isinstance(err, InvalidArgument) and err.message == error.message
