"""The baseline of bench/batch_million.py: the same work as `predmesh batch score --wait-stored`, without the mesh,
the way a data team's plain script does it.

Usage:  .venv/bin/python bench/batch_baseline.py --store DIR --model NAME --input CSV --output CSV --pg-url URL
                                                 --table NAME

pandas reads the whole file; the model's newest version in the store (the very artifact the server loads, through
the same hash and trust checks) predicts in process (predict_proba, label = the class of the highest probability);
one COPY stores every row (id, the features, label, one probability column per class) into a new table with a
primary key on id, committed; the scored CSV (the input's columns, label, prob_<class>…) is written with pandas.
Prints one JSON line: rows, the seconds of each step and pg_cpu, the CPU seconds of its PostgreSQL backend during
the COPY (read from /proc: PostgreSQL on this machine, as in the bench).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process from /proc (the database's backend of this connection, when PostgreSQL runs
    on this machine: the bench's case; 0.0 when it cannot be read)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--input", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--pg-url", required=True)
    parser.add_argument("--table", required=True)
    args = parser.parse_args()

    t0 = time.perf_counter()
    import numpy as np
    import pandas as pd
    import psycopg2

    from inference.models.loader import load_estimator, read_manifest
    from inference.models.store import ModelStore

    store = ModelStore(args.store)
    path = args.store / args.model / store.newest(args.model)
    manifest = read_manifest(path, None)
    estimator = load_estimator(path, manifest)
    names = [f.name for f in manifest.features]
    t_load = time.perf_counter()

    frame = pd.read_csv(args.input)
    t_read = time.perf_counter()
    features = frame[names]
    X = features if manifest.input == "frame" else features.to_numpy(dtype=np.float64)
    probabilities = estimator.predict_proba(X)
    classes = [str(c) for c in estimator.classes_]
    labels = np.asarray(classes, dtype=object)[probabilities.argmax(axis=1)]
    t_score = time.perf_counter()

    stored = pd.DataFrame({"id": frame["id"].astype(str)})
    for name in names:
        stored[name] = features[name]
    stored["label"] = labels
    for j, c in enumerate(classes):
        stored[f"prob_{c}"] = probabilities[:, j]
    kinds = {f.name: ("double precision" if f.kind == "number" else "text") for f in manifest.features}
    columns = ["id text PRIMARY KEY", *(f'"{n}" {kinds[n]}' for n in names), "label text",
               *(f'"prob_{c}" double precision' for c in classes)]
    buffer = io.StringIO()
    stored.to_csv(buffer, index=False, header=False)
    buffer.seek(0)
    conn = psycopg2.connect(args.pg_url)
    backend = conn.get_backend_pid()
    pg0 = _cpu_seconds(backend)
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE TABLE {args.table} ({', '.join(columns)})")
            cur.copy_expert(f"COPY {args.table} FROM STDIN WITH (FORMAT csv)", buffer)
        conn.commit()
        pg_cpu = _cpu_seconds(backend) - pg0
    finally:
        conn.close()
    t_copy = time.perf_counter()

    scored = frame.copy()
    scored["label"] = labels
    for j, c in enumerate(classes):
        scored[f"prob_{c}"] = probabilities[:, j]
    scored.to_csv(args.output, index=False)
    t_write = time.perf_counter()
    print(json.dumps({"rows": len(frame), "load_model": t_load - t0, "read": t_read - t_load,
                      "score": t_score - t_read, "copy": t_copy - t_score, "write": t_write - t_copy,
                      "pg_cpu": pg_cpu}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
