"""How the batch commands fail, as processes: `predmesh batch scheduler` with a task history database it cannot
open (not answering, or a driver that is not installed) ends with one line naming PREDMESH_LUIGID_HISTORY_DB, its
password hidden, exit 1 (it was a SQLAlchemy traceback; under `predmesh up`, one per restart); a failed
`predmesh batch score` ends with its failure."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.procs import closed_port

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("scheme, reason", [("postgresql", "OperationalError"),
                                            ("mysql", "ModuleNotFoundError")])
def test_a_task_history_that_cannot_be_opened_is_one_line(tmp_path, scheme, reason):
    with closed_port() as port:
        history = f"{scheme}://luigi:s3cret@127.0.0.1:{port}/history"
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PREDMESH_LUIGID_DIR": str(tmp_path / "luigid"),
               "PREDMESH_LUIGID_ADDR": "127.0.0.1:0",  # any port: the history is opened before luigid binds
               "PREDMESH_LUIGID_HISTORY_DB": history}
        result = subprocess.run([sys.executable, "-m", "batch", "scheduler"], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=120)
    assert "Traceback" not in result.stderr and "s3cret" not in result.stderr, result.stderr
    assert result.returncode == 1, (result.returncode, result.stderr)
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"predmesh batch scheduler: luigid's task history {scheme}://luigi:***@127.0.0.1:{port}"
                           f"/history cannot be opened ({reason}: "), last
    assert last.endswith("fix PREDMESH_LUIGID_HISTORY_DB, or unset it for SQLite in PREDMESH_LUIGID_DIR"), last


def test_a_failed_score_ends_with_its_failure(tmp_path):
    """With the server down, `predmesh batch score` printed `FAILED: …` and then, last, its note that the failed
    attempt could not be recorded either: the line a reader (or `| tail -1`) takes for the outcome."""
    rows = tmp_path / "rows.csv"
    rows.write_text("sepal_length,sepal_width,petal_length,petal_width\n5.1,3.5,1.4,0.2\n")
    with closed_port() as port:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PREDMESH_SERVER_ADDR": f"127.0.0.1:{port}",
               "PREDMESH_BATCH_RETRIES": "0", "PREDMESH_BATCH_TIMEOUT_S": "5"}
        result = subprocess.run([sys.executable, "-m", "batch", "score", "--model", "iris", "--input", str(rows)],
                                cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith(f"predmesh batch score: FAILED: Unavailable from the server at 127.0.0.1:{port}"), \
        lines
    assert any("was not recorded" in line for line in lines[:-1]), lines
