"""The contract: generated stubs are fresh (protoc), buf lint is clean, buf breaking passes and can fail."""
from __future__ import annotations

import filecmp
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
BUF = shutil.which("buf", path=str(Path(sys.executable).parent)) or shutil.which("buf")
BASELINE = ROOT / "protos" / "baseline" / "predmesh-v1.binpb"
# The 0.2 contract and the breaking changes 0.3 made to it on purpose (typed features: map<string, double> to
# map<string, google.protobuf.Value>; docs/contract.md): nothing else may break against it.
BASELINE_0_2 = ROOT / "protos" / "baseline" / "predmesh-v1-0.2.binpb"
ACCEPTED_0_2 = ROOT / "protos" / "baseline" / "accepted-breaks-0.2.jsonl"


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


def test_buf_breaking_against_0_2_finds_only_the_accepted_breaks(tmp_path):
    """The one documented exception: against the 0.2 contract, buf breaking reports exactly the accepted findings
    (the features maps' value type), not fewer and not more."""
    image = tmp_path / "current.binpb"
    assert _buf("build", "--exclude-source-info", "-o", str(image)).returncode == 0
    result = _buf("breaking", str(image), "--against", str(BASELINE_0_2), "--error-format", "json")
    found = sorted(result.stdout.split("\n"), key=str)
    found = [json.loads(line) for line in found if line.strip()]
    accepted = [json.loads(line) for line in sorted(ACCEPTED_0_2.read_text().splitlines()) if line.strip()]
    assert accepted and all(a["type"] == "FIELD_SAME_TYPE" and "FeaturesEntry" in a["message"] for a in accepted)
    assert result.returncode == 100 and found == accepted, result.stdout + result.stderr


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
