"""`predmesh … | head -1`: a reader that goes away ends the command quietly (exit 141, as a Unix tool killed by
SIGPIPE), not with a BrokenPipeError traceback (`predmesh desired iris | head -3` and `predmesh batch crontab`
printed one)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("argv", [["batch", "crontab"],
                                  # printed by the dispatcher itself, outside the guard: a traceback (`| head -3`)
                                  ["--help"], ["--version"]])
def test_a_closed_pipe_ends_a_command_quietly(tmp_path, argv):
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the command writes a byte
    try:
        result = subprocess.run([sys.executable, "-m", "cli", *argv], cwd=ROOT, stdout=write,
                                stderr=subprocess.PIPE, text=True, timeout=60,
                                env={**os.environ, "PYTHONPATH": str(ROOT), "PREDMESH_BATCH_DIR": str(tmp_path)})
    finally:
        os.close(write)
    assert "Traceback" not in result.stderr and "BrokenPipeError" not in result.stderr, result.stderr
    assert result.returncode == 141, (result.returncode, result.stderr)
