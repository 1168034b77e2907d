"""The predmesh console script: dispatch, train into a store, unknown commands."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def run(*args, store: Path | None = None):
    env = {**os.environ, **({"PREDMESH_MODEL_STORE": str(store)} if store else {})}
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


def test_train_writes_new_immutable_versions(tmp_path):
    store = tmp_path / "models"
    first = run("train", "--model", "demo", "--estimator", "lr", store=store)
    assert first.returncode == 0, first.stderr
    assert "trained demo version 1 (LogisticRegression)" in first.stdout
    second = run("train", "--model", "demo", "--estimator", "rf", store=store)
    assert "trained demo version 2 (RandomForestClassifier)" in second.stdout
    meta = json.loads((store / "demo" / "1" / "metadata.json").read_text())
    assert meta["estimator"] == "LogisticRegression" and len(meta["sha256"]) == 64
    assert {"holdout_accuracy", "holdout_macro_precision", "train_accuracy"} <= set(meta["metrics"])
    assert [f["name"] for f in meta["features"]] == ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    assert meta["golden"] and meta["sklearn_version"] and meta["created_at"]


def test_help_and_unknown_command():
    helped = run("--help")
    assert helped.returncode == 0
    for command in ("train", "serve", "gateway", "migrate", "up"):
        assert f"  {command}" in helped.stdout
    unknown = run("frobnicate")
    assert unknown.returncode == 2 and "unknown command 'frobnicate'" in unknown.stderr


def test_version():
    out = run("--version")
    assert out.returncode == 0 and out.stdout.strip() == "predmesh 0.1.0", out


def test_usage_lines_name_the_predmesh_command_and_help_lists_its_variables():
    expected = {"serve": ["PREDMESH_GRPC_ADDR", "PREDMESH_PROCESSES", "PREDMESH_RUNTIME", "PREDMESH_DATABASE_URL"],
                "train": ["PREDMESH_MODEL_STORE"],
                "gateway": ["PREDMESH_GATEWAY_ADDR", "PREDMESH_GATEWAY_CORS_ORIGINS", "PREDMESH_GATEWAY_UPSTREAMS"],
                "migrate": ["PREDMESH_DATABASE_URL"],
                "up": ["PREDMESH_GRPC_ADDR", "PREDMESH_MODEL_STORE"]}
    for command, variables in expected.items():
        out = run(command, "--help")
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith(f"usage: predmesh {command} "), out.stdout[:80]
        text = " ".join(out.stdout.split())  # the epilog wraps
        for name in variables:
            assert name in text, (command, name)
    wrong = run("serve", "--frobnicate")
    assert wrong.returncode == 2 and wrong.stderr.startswith("usage: predmesh serve")


def test_parts_without_start_up_guards_keep_python_s_ctrl_c(monkeypatch):
    """`predmesh <part>` for a part whose main takes no prog (it handles Ctrl-C itself, e.g. as KeyboardInterrupt)
    runs with Python's default SIGINT handler, not the start-up guard of the dispatcher."""
    import importlib
    import signal
    import sys
    import types

    original = signal.getsignal(signal.SIGINT)  # importing cli.main installs its start-up guard: undone below
    cli_main = importlib.import_module("cli.main")
    seen: dict[str, object] = {}
    part = types.ModuleType("fake_part")
    vars(part)["main"] = lambda argv: seen.setdefault("handler", signal.getsignal(signal.SIGINT)) and 0
    monkeypatch.setitem(sys.modules, "fake_part", part)
    monkeypatch.setitem(cli_main.COMMANDS, "fake", ("fake_part", [], "a part"))
    try:
        assert cli_main.main(["fake"]) == 0
    finally:
        signal.signal(signal.SIGINT, original)
    assert seen["handler"] is signal.default_int_handler
