"""Batch outputs (batch/table.py) with a real writer process: a writer killed with -9 mid-write leaves no file."""
from __future__ import annotations

import subprocess
import sys

from tests.support.procs import ROOT


def test_a_killed_writer_leaves_no_file(tmp_path):
    script = ("import sys, os; from batch.table import published_file\n"
              "with published_file(sys.argv[1]) as f:\n"
              "    f.write('x' * 100_000); f.flush(); print('writing', flush=True); sys.stdin.read()\n")
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "out.csv")], cwd=ROOT,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline() == "writing\n"
    proc.kill()
    proc.wait(10)
    assert list(tmp_path.iterdir()) == []
