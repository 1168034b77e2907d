"""The REST comparison's FastAPI baseline (bench/fastapi_baseline.py) answers like the model and stores a row per
request on the real PostgreSQL, so bench/rest_compare.py compares against a working seed design."""
from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from bench import loadtools
from bench.fastapi_baseline import TABLE, FastAPIBaseline, count_rows, create_table, write_models
from tests.conftest import IRIS_ROW
from tests.support.pg import TempSchema


def post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.load(answer)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


@pytest.mark.slow
def test_baseline_answers_as_the_model_and_commits_a_row_per_request(trained_store, tmp_path):
    import numpy as np
    import psycopg2

    from inference.models.loader import load_estimator, read_manifest, version_dir

    path = version_dir(trained_store, "iris", "2")  # LogisticRegression
    manifest = read_manifest(path, None)
    estimator = load_estimator(path, manifest)
    names, classes = list(manifest.feature_names), list(manifest.classes)
    write_models(tmp_path / "models", {"iris-lr": (estimator, names, classes)})
    want = estimator.predict_proba(np.array([[IRIS_ROW[n] for n in names]]))[0]
    with TempSchema() as schema:
        create_table(schema.url)
        server = FastAPIBaseline(tmp_path / "models", schema.url, port=loadtools.free_port(), workers=1,
                                 log_path=tmp_path / "fastapi.log")
        try:
            server.start({"model": "iris-lr", "features": IRIS_ROW})
            status, answer = post(server.url, {"model": "iris-lr", "features": IRIS_ROW})
            assert status == 200, answer
            assert answer["label"] == classes[int(want.argmax())]
            assert [answer["probabilities"][c] for c in classes] == pytest.approx(want.tolist(), abs=1e-12)
            assert post(server.url, {"model": "nope", "features": IRIS_ROW})[0] == 404
            assert post(server.url, {"model": "iris-lr", "features": {"sepal_length": 1.0}})[0] == 400
            assert post(server.url, {"model": "iris-lr"})[0] == 422
        finally:
            server.stop()
        assert count_rows(schema.url) == 2  # the readiness probe's answer and the one above; refusals store nothing
        conn = psycopg2.connect(schema.url)
        with conn, conn.cursor() as cur:
            cur.execute(f"SELECT label, probabilities FROM {TABLE} WHERE prediction_id = %s",
                        (answer["prediction_id"],))
            assert cur.fetchone() == (answer["label"], answer["probabilities"])
        conn.close()
