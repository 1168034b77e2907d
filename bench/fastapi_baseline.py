"""The seed's design, as the baseline a team would otherwise build: a FastAPI `/predict` service.

uvicorn (uvloop + httptools) with N worker processes; each holds the same fitted scikit-learn estimators in
process and stores every answer with one PostgreSQL INSERT per request (psycopg2, committed before the answer,
so as durable as PostgreSQL's commit). The handler is a plain `def`: FastAPI runs it on its thread pool, each
thread with its own connection. POST /predict {"model": "iris-lr", "features": {"sepal_length": 5.1, ...}}
answers {"prediction_id", "model", "label", "probabilities"}; an unknown model is 404, missing or extra
features 400, a malformed body 422.

Run by bench/rest_compare.py (FastAPIBaseline below); by hand:
  BASELINE_MODEL_DIR=DIR BASELINE_DATABASE_URL=postgresql://... \\
    .venv/bin/python -m uvicorn --factory bench.fastapi_baseline:app_from_env --workers 2 --port 8000
with DIR written by write_models() and the table made by create_table().
"""
# No `from __future__ import annotations`: FastAPI reads the handler's annotations at run time, and its request
# model is local to create_app.
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TABLE = "fastapi_predictions"


def write_models(model_dir: Path, models: dict[str, tuple[Any, list[str], list[str]]]) -> None:
    """models[name] = (fitted estimator, feature names in column order, class labels): <name>.joblib + .json."""
    import joblib

    model_dir.mkdir(parents=True, exist_ok=True)
    for name, (estimator, features, classes) in models.items():
        joblib.dump(estimator, model_dir / f"{name}.joblib")
        (model_dir / f"{name}.json").write_text(json.dumps({"features": features, "classes": classes}))


def create_table(database_url: str) -> None:
    """The baseline's table (once), like the seed's predictions table: id, model, features, label, probabilities."""
    import psycopg2

    conn = psycopg2.connect(database_url)
    with conn, conn.cursor() as cur:
        cur.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (prediction_id uuid PRIMARY KEY, model text NOT NULL, "
                    "features jsonb NOT NULL, label text NOT NULL, probabilities jsonb NOT NULL, "
                    "latency_ms double precision NOT NULL, created_at timestamptz NOT NULL)")
    conn.close()


def count_rows(database_url: str) -> int:
    import psycopg2

    conn = psycopg2.connect(database_url)
    with conn, conn.cursor() as cur:
        cur.execute(f"SELECT count(*) FROM {TABLE}")
        row = cur.fetchone()
    conn.close()
    return int(row[0]) if row else 0


def create_app(model_dir: Path, database_url: str):
    """The FastAPI application: the estimators of model_dir in process, a connection per handler thread."""
    import joblib
    import numpy as np
    import psycopg2
    from fastapi import FastAPI, HTTPException
    from pydantic import BaseModel

    class PredictRequest(BaseModel):
        model: str
        features: dict[str, float]

    models: dict[str, tuple[Any, list[str], list[str]]] = {}
    for path in sorted(model_dir.glob("*.joblib")):
        meta = json.loads(path.with_suffix(".json").read_text())
        models[path.stem] = (joblib.load(path), meta["features"], meta["classes"])
    local = threading.local()
    app = FastAPI(title="FastAPI baseline (the seed's design)")

    def connection():
        conn = getattr(local, "conn", None)
        if conn is None or conn.closed:
            conn = local.conn = psycopg2.connect(database_url)
        return conn

    @app.post("/predict")
    def predict(req: PredictRequest) -> dict[str, Any]:
        t0 = time.perf_counter()
        if req.model not in models:
            raise HTTPException(404, f"unknown model {req.model!r}")
        estimator, names, classes = models[req.model]
        if set(req.features) != set(names):
            raise HTTPException(400, f"features must be exactly {', '.join(names)}")
        proba = estimator.predict_proba(np.array([[req.features[n] for n in names]]))[0]
        label = classes[int(proba.argmax())]
        probabilities = {c: float(p) for c, p in zip(classes, proba)}
        prediction_id = str(uuid.uuid4())
        conn = connection()
        with conn.cursor() as cur:
            cur.execute(f"INSERT INTO {TABLE} VALUES (%s, %s, %s, %s, %s, %s, %s)",
                        (prediction_id, req.model, json.dumps(req.features), label, json.dumps(probabilities),
                         (time.perf_counter() - t0) * 1000, datetime.now(UTC)))
        conn.commit()
        return {"prediction_id": prediction_id, "model": req.model, "label": label, "probabilities": probabilities}

    return app


def app_from_env():
    """uvicorn --factory entry point: BASELINE_MODEL_DIR and BASELINE_DATABASE_URL (bench-only, not predmesh's)."""
    return create_app(Path(os.environ["BASELINE_MODEL_DIR"]), os.environ["BASELINE_DATABASE_URL"])


class FastAPIBaseline:
    """`uvicorn --workers N` serving the baseline on 127.0.0.1:port, access log off (its best, not its default);
    started once every worker has logged its startup and one request is answered."""

    def __init__(self, model_dir: Path, database_url: str, *, port: int, workers: int, log_path: Path):
        self.model_dir, self.database_url, self.port, self.workers = model_dir, database_url, port, workers
        self.log_path = log_path
        self.url = f"http://127.0.0.1:{port}/predict"
        self.proc: subprocess.Popen | None = None

    def start(self, probe_body: dict, timeout: float = 180.0) -> "FastAPIBaseline":
        import urllib.request

        env = {**{k: v for k, v in os.environ.items() if not k.startswith("PREDMESH_")},
               "BASELINE_MODEL_DIR": str(self.model_dir), "BASELINE_DATABASE_URL": self.database_url,
               "OMP_NUM_THREADS": "1"}
        self._log = open(self.log_path, "ab")
        offset = self._log.tell()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "bench.fastapi_baseline:app_from_env",
             "--host", "127.0.0.1", "--port", str(self.port), "--workers", str(self.workers),
             "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "info"],
            cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        request = urllib.request.Request(self.url, data=json.dumps(probe_body).encode(),
                                         headers={"Content-Type": "application/json"})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"the FastAPI baseline exited with {self.proc.returncode}; see {self.log_path}")
            with open(self.log_path, "rb") as log:  # every worker, not just the first, has loaded the models
                log.seek(offset)
                ready = log.read().count(b"Application startup complete") >= self.workers
            try:
                with urllib.request.urlopen(request, timeout=2) as answer:
                    if answer.status == 200 and ready:
                        return self
            except OSError:
                pass
            time.sleep(0.3)
        self.stop()
        raise SystemExit(f"the FastAPI baseline did not answer within {timeout:g} s; see {self.log_path}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()
        if self.proc:
            self._log.close()
