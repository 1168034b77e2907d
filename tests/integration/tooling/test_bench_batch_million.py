"""bench/batch_million.py at a tiny scale, so that it cannot rot: 2,000 rows of iris through `predmesh batch score
--wait-stored` and through the pandas baseline, both counted in PostgreSQL, a ratio printed (its value is noise)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.pg import test_pg_url as pg_url

pytestmark = [pytest.mark.postgres, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[3]


def test_the_batch_bench_runs_both_sides_and_counts_every_row(tmp_path):
    out = tmp_path / "result.json"
    run = subprocess.run([sys.executable, "bench/batch_million.py", "--rows", "2000", "--models", "iris",
                          "--warmup-rows", "0", "--pg-url", pg_url(), "--json", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stdout + run.stderr
    [result] = json.loads(out.read_text())["iris"]
    assert result["mesh"]["stored"] == result["baseline"]["stored"] == 2000
    assert result["mesh"]["peak_rss_mb"] > 10 and result["baseline"]["peak_rss_mb"] > 10
    assert "all 2000 rows stored in the database" in result["mesh"]["last_line"]
    assert "median ratio" in run.stdout
