"""The Triton client instructions of docs/oip.md work as written: its install line in a fresh virtualenv (no
system site-packages, nothing from predmesh's venv), then its Python block against a real server."""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

import pytest

from tests.support.match import search
from tests.support.procs import ROOT

pytestmark = pytest.mark.slow  # creates a virtualenv and installs into it (from pip's cache once it is warm)


def readme_blocks() -> tuple[str, str]:
    """(install command, python code) of the Open Inference Protocol page, docs/oip.md."""
    section = (ROOT / "docs" / "oip.md").read_text()
    install = search(r"```bash\n(.*?)```", section, re.S).group(1).strip()
    code = search(r"```python\n(.*?)```", section, re.S).group(1)
    return install, code


def test_readme_triton_install_line_and_snippet_work_in_a_fresh_venv(server_proc, tmp_path):
    install, code = readme_blocks()
    assert "tritonclient" in install and install.startswith("python3 -m venv triton-env && ")
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if not p.startswith(sys.prefix))  # python3 = the system's, not our venv's
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    done = subprocess.run(["bash", "-c", install], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    python = tmp_path / "triton-env" / "bin" / "python"
    imported = subprocess.run([str(python), "-c", "import predmesh"], capture_output=True, text=True, cwd=tmp_path)
    assert imported.returncode != 0  # really a fresh environment: nothing of ours leaks into it
    script = code.replace('"127.0.0.1:50051"', repr(server_proc.target))
    run = subprocess.run([str(python), "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    numbers = [float(x) for x in re.findall(r"[0-9.]+(?:e-?\d+)?", run.stdout)]
    assert len(numbers) == 3 and abs(sum(numbers) - 1) < 1e-4, run.stdout  # one row of 3 class probabilities
    print(f"\n{shlex.join(['bash', '-c', install])}: ok")
