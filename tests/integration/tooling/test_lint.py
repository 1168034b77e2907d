"""The project's own checkers at zero findings: ruff (pyproject's [tool.ruff]) and mypy ([tool.mypy]: strict for the
SDK, check_untyped_defs everywhere else). A failure prints every finding."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, input=stdin, capture_output=True, text=True,
                          timeout=280)


def test_ruff_finds_nothing():
    result = run("ruff", "check", "--no-cache", "--output-format", "concise", ".")
    assert result.returncode == 0, f"ruff findings:\n{result.stdout}{result.stderr}"


def test_mypy_finds_nothing():
    result = run("mypy")  # the files and options of [tool.mypy]
    assert result.returncode == 0, f"mypy findings:\n{result.stdout}{result.stderr}"
    assert "Success: no issues found" in result.stdout


def test_the_checkers_apply_the_project_rules(tmp_path):
    """Planted mistakes are found, so a zero above means clean code, not a configuration that checks nothing."""
    ruff = run("ruff", "check", "--no-cache", "--output-format", "concise", "--stdin-filename",
               "inference/planted.py", "-", stdin="import os\n")
    assert ruff.returncode == 1 and "F401" in ruff.stdout, ruff.stdout + ruff.stderr
    # the SDK is strict: an unannotated function is an error there ...
    sdk = tmp_path / "sdk.py"
    sdk.write_text("def passthrough(x):\n    return x\n")
    result = run("mypy", "--shadow-file", "predmesh/logs.py", str(sdk), "predmesh/logs.py")
    assert result.returncode == 1 and "[no-untyped-def]" in result.stdout, result.stdout + result.stderr
    # ... and elsewhere the bodies of unannotated functions are checked
    server = tmp_path / "server.py"
    server.write_text("def f():\n    n: int = 'one'\n    return n\n")
    result = run("mypy", "--shadow-file", "inference/errors.py", str(server), "inference/errors.py")
    assert result.returncode == 1 and "[assignment]" in result.stdout, result.stdout + result.stderr
    assert "[no-untyped-def]" not in result.stdout, "only the SDK is strict"
