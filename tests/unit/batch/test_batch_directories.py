"""A directory a batch setting names that cannot be created (a file in the way, no right to write there) ends the
command with one line naming the setting, exit 1: `predmesh batch nightly` and `predmesh batch scheduler` ended
with a traceback ending in NotADirectoryError."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("argv, variable", [
    (["nightly", "--local-scheduler", "--rows", "10"], "PREDMESH_BATCH_DIR"),
    (["backfill", "--local-scheduler", "--days-back", "1"], "PREDMESH_BATCH_DIR"),
    (["scheduler"], "PREDMESH_LUIGID_DIR"),
])
def test_a_directory_that_cannot_be_created_is_one_line_naming_its_setting(tmp_path, argv, variable):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PREDMESH_BATCH_DIR": str(tmp_path / "batch"),
           "PREDMESH_LUIGID_DIR": str(tmp_path / "luigid"),
           "PREDMESH_LUIGID_ADDR": "127.0.0.1:0",  # any port: the directory is refused before luigid binds
           "PREDMESH_SERVER_ADDR": "127.0.0.1:1", variable: str(blocker / "dir")}
    result = subprocess.run([sys.executable, "-m", "batch", *argv], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=120)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert result.stderr.strip().splitlines()[-1] == (
        f"predmesh batch {argv[0]}: {variable}: cannot create the directory {blocker / 'dir'}"
        f"{'/.locks' if variable == 'PREDMESH_BATCH_DIR' else ''} (Not a directory)")
