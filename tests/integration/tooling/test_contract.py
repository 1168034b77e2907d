"""The contract: generated stubs are fresh (protoc), buf lint is clean, buf breaking passes and can fail."""
from __future__ import annotations

import filecmp
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
BUF = shutil.which("buf", path=str(Path(sys.executable).parent)) or shutil.which("buf")
BASELINE = ROOT / "protos" / "baseline" / "predmesh-v1.binpb"


def _codegen():
    spec = importlib.util.spec_from_file_location("codegen", ROOT / "scripts" / "codegen.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_stubs_are_fresh(tmp_path):
    _codegen().generate(tmp_path)
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert generated, "codegen produced nothing"
    stale = [str(rel) for rel in generated
             if not (ROOT / rel).exists() or not filecmp.cmp(tmp_path / rel, ROOT / rel, shallow=False)]
    assert not stale, f"stale generated code, run `python scripts/codegen.py`: {stale}"


def _buf(*args, cwd=ROOT):
    assert BUF, "buf is not installed (pip install buf-bin)"
    return subprocess.run([BUF, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_buf_lint_is_clean():
    result = _buf("lint")
    assert result.returncode == 0, result.stdout + result.stderr


def test_buf_breaking_against_committed_baseline(tmp_path):
    image = tmp_path / "current.binpb"
    assert _buf("build", "--exclude-source-info", "-o", str(image)).returncode == 0
    result = _buf("breaking", str(image), "--against", str(BASELINE))
    assert result.returncode == 0, result.stdout + result.stderr


def test_buf_breaking_detects_a_changed_field_type(tmp_path):
    """The check is live: changing a field's type in a copy of the contract must be reported."""
    work = tmp_path / "repo"
    shutil.copytree(ROOT / "protos", work / "protos")
    shutil.copy(ROOT / "buf.yaml", work / "buf.yaml")
    proto = work / "protos" / "predmesh" / "v1" / "inference.proto"
    text = proto.read_text()
    assert "string request_id = 3;" in text
    proto.write_text(text.replace("string request_id = 3;", "int64 request_id = 3;", 1))
    image = tmp_path / "changed.binpb"
    assert _buf("build", "--exclude-source-info", "-o", str(image), cwd=work).returncode == 0
    result = _buf("breaking", str(image), "--against", str(BASELINE))
    assert result.returncode == 100 and "request_id" in result.stdout, result.stdout + result.stderr
