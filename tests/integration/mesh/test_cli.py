"""The predmesh console script as a real process: dispatch, train into a store, unknown commands, `predmesh ui`'s
usage and a bad setting."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

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
    # one column for the commands' descriptions (`retention` ran into its own: "retention drop stored …")
    rows = helped.stdout.split("commands:\n")[1].split("\n\n")[0].splitlines()
    starts = {len(row) - len(row.split(maxsplit=1)[1]) for row in rows}
    assert len(rows) >= 16 and len(starts) == 1, rows


def test_every_command_s_usage_and_error_lines_name_the_command_typed():
    """`predmesh status --help` read "usage: predmesh up …" and `predmesh retention --help` "usage: predmesh [-h] …
    [{migrate,status,retention}]"; their error lines began "predmesh up: error:" and "predmesh:"."""
    from concurrent.futures import ThreadPoolExecutor

    commands = ["train", "import", "serve", "gateway", "migrate", "retention", "ui", "up", "consume", "publish",
                "rollout", "pin", "rollback", "desired", "status", "batch"]
    with ThreadPoolExecutor(max_workers=2) as pool:
        helped = dict(zip(commands, pool.map(lambda c: run(c, "--help"), commands)))
    for command, out in helped.items():
        assert out.returncode == 0, (command, out.stderr)
        assert out.stdout.startswith(f"usage: predmesh {command} "), (command, out.stdout[:80])
    status = run("status", "--replicas", "0")
    assert status.returncode == 2 and status.stderr.splitlines()[-1] == \
        "predmesh status: error: --replicas must be at least 1", status.stderr
    env = {**os.environ, "PREDMESH_RETENTION_DAYS": "-1"}
    retention = subprocess.run([sys.executable, "-m", "cli", "retention"], cwd=ROOT, env=env, capture_output=True,
                               text=True, timeout=120)
    assert retention.returncode == 2, retention
    assert retention.stderr.strip() == "predmesh retention: PREDMESH_RETENTION_DAYS=-1 must be >= 0"


def test_version_has_one_source_for_the_project_and_the_client_package():
    """`predmesh --version` said 0.1.0 while the predmesh-client package (sdk/) was 0.2.0: both pyproject.toml
    files now take predmesh/_version.py, as setuptools expands them, and so does the command and the SDK."""
    # setuptools ships no type information and its stub package (types-setuptools) is not installed for this one
    # import; the test checks the values it returns
    from setuptools.config.pyprojecttoml import read_configuration  # type: ignore[import-untyped]

    import predmesh

    project = read_configuration(ROOT / "pyproject.toml", expand=True)["project"]
    client = read_configuration(ROOT / "sdk" / "pyproject.toml", expand=True)["project"]
    assert (project["name"], client["name"]) == ("predmesh", "predmesh-client")
    assert project["version"] == client["version"] == predmesh.__version__, (project["version"], client["version"])
    out = run("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"predmesh {predmesh.__version__}", out


def test_usage_lines_name_the_predmesh_command_and_help_lists_its_variables():
    expected = {"serve": ["PREDMESH_GRPC_ADDR", "PREDMESH_PROCESSES", "PREDMESH_RUNTIME", "PREDMESH_DATABASE_URL"],
                "train": ["PREDMESH_MODEL_STORE"],
                "import": ["PREDMESH_MODEL_STORE"],
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

    def main(argv: list[str]) -> int:
        seen["handler"] = signal.getsignal(signal.SIGINT)
        return 0
    part = types.ModuleType("fake_part")
    vars(part)["main"] = main
    monkeypatch.setitem(sys.modules, "fake_part", part)
    monkeypatch.setitem(cli_main.COMMANDS, "fake", ("fake_part", [], "a part"))
    try:
        assert cli_main.main(["fake"]) == 0
    finally:
        signal.signal(signal.SIGINT, original)
    assert seen["handler"] is signal.default_int_handler


def test_tls_files_that_cannot_be_used_are_one_line_settings_errors(tmp_path):
    """PREDMESH_TLS_CERT without PREDMESH_TLS_KEY (or the reverse, or a file that cannot be read) ends `predmesh
    serve` with one line naming the variable and exit 2, like every other malformed setting; no traceback."""
    pem = tmp_path / "server.pem"
    pem.write_text("-----BEGIN CERTIFICATE-----\n")
    base = {"PREDMESH_GRPC_ADDR": "127.0.0.1:0", "PREDMESH_METRICS_ADDR": "", "PREDMESH_PERSISTENCE": "off",
            "PREDMESH_MODEL_STORE": str(tmp_path / "models")}
    cases = [({"PREDMESH_TLS_CERT": str(pem)}, "PREDMESH_TLS_CERT is set without PREDMESH_TLS_KEY"),
             ({"PREDMESH_TLS_KEY": str(pem)}, "PREDMESH_TLS_KEY is set without PREDMESH_TLS_CERT"),
             ({"PREDMESH_TLS_CERT": str(pem), "PREDMESH_TLS_KEY": str(tmp_path / "missing.key")},
              f"PREDMESH_TLS_KEY: cannot read {tmp_path / 'missing.key'}"),
             ({"PREDMESH_TLS_CERT": str(tmp_path), "PREDMESH_TLS_KEY": str(pem)},
              f"PREDMESH_TLS_CERT: cannot read {tmp_path}"),
             ({"PREDMESH_TLS_CLIENT_CA": str(pem)}, "PREDMESH_TLS_CLIENT_CA needs PREDMESH_TLS_CERT")]
    for extra, message in cases:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREDMESH_TLS")}
        out = subprocess.run([sys.executable, "-m", "cli", "serve", "--no-train"], check=False, cwd=ROOT,
                             env={**env, **base, **extra}, capture_output=True, text=True, timeout=120)
        assert out.returncode == 2, (extra, out.returncode, out.stderr[-2000:])
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"predmesh serve: {message}"), out.stderr


def test_a_range_tolerance_that_is_not_a_finite_non_negative_number_stops_the_start(tmp_path):
    """PREDMESH_RANGE_TOLERANCE=nan switched the range check off silently, a negative one too: now exit 2."""
    for value in ("nan", "-1", "inf"):
        out = subprocess.run([sys.executable, "-m", "cli", "serve", "--no-train"], check=False, cwd=ROOT,
                             env={**os.environ, "PREDMESH_GRPC_ADDR": "127.0.0.1:0", "PREDMESH_METRICS_ADDR": "",
                                  "PREDMESH_PERSISTENCE": "off", "PREDMESH_MODEL_STORE": str(tmp_path / "models"),
                                  "PREDMESH_RANGE_TOLERANCE": value},
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 2, (value, out.stderr[-2000:])
        assert out.stderr.strip().startswith("predmesh serve: PREDMESH_RANGE_TOLERANCE=") and len(
            out.stderr.strip().splitlines()) == 1, out.stderr


class _Spy(dict):
    """An empty environment that notes every name looked up in it, whichever way (independent of --help's reader)."""

    def __init__(self):
        super().__init__()
        self.seen: set[str] = set()

    def get(self, key, default=None):
        self.seen.add(key)
        return default

    def __contains__(self, key):
        self.seen.add(key)
        return False

    def __getitem__(self, key):
        self.seen.add(key)
        raise KeyError(key)


def test_help_of_consume_publish_and_batch_score_lists_every_variable_their_settings_read():
    """`predmesh consume --help`, `publish --help` and `batch score --help` named no environment variable; each must
    list exactly the PREDMESH_* variables its settings class reads (the other commands already do)."""
    import re

    from batch.settings import BatchSettings
    from consumer.settings import AmqpSettings, ConsumerSettings

    for command, read in ((("consume",), ConsumerSettings.from_env), (("publish",), AmqpSettings.from_env),
                          (("batch", "score"), BatchSettings.from_env)):
        spy = _Spy()
        read(spy)
        out = run(*command, "--help")
        assert out.returncode == 0, out.stderr
        found = re.findall(r"(PREDMESH_[A-Z0-9_]+)(\[_FILE\])?", out.stdout.split("environment:", 1)[-1])
        listed = {name for name, _ in found} | {name + "_FILE" for name, file in found if file}  # X[_FILE]
        assert spy.seen and listed == spy.seen, (command, sorted(spy.seen ^ listed))


# -- predmesh ui --------------------------------------------------------------------------------------------------
def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "cli", "ui", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env={**os.environ, **(env or {})})


def test_predmesh_ui_help_lists_its_variables_and_a_bad_setting_is_one_line():
    helped = _cli("--help")
    assert helped.returncode == 0 and "usage: predmesh ui" in helped.stdout
    for name in ("PREDMESH_UI_ADDR", "PREDMESH_UI_PASSWORD[_FILE]", "PREDMESH_UI_ALLOWED_ORIGINS",
                 "PREDMESH_SERVER_ADDR"):
        assert name in helped.stdout
    bad = _cli(env={"PREDMESH_UI_ADDR": "nope"})
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "predmesh ui: PREDMESH_UI_ADDR='nope' must be host:port, e.g. 127.0.0.1:5006"]


@pytest.mark.parametrize("argv, variable, created, reason", [
    (["serve"], "PREDMESH_MODEL_STORE", "dir", "Not a directory"),
    (["train"], "PREDMESH_MODEL_STORE", "dir", "Not a directory"),
    (["serve", "--no-train"], "PREDMESH_SPOOL_DIR", "dir", "Not a directory"),
    (["gateway", "--check"], "PREDMESH_GATEWAY_DIR", "dir", "Not a directory"),
    (["migrate"], "PREDMESH_DATABASE_URL", "", "a file is in the way"),
])
def test_a_directory_that_cannot_be_created_is_one_line_naming_its_setting(tmp_path, argv, variable, created,
                                                                            reason):
    """A setting naming a directory below a file (or where the process may not write) ended the start with
    "[Errno 20] Not a directory: '…/models/iris'" (the store), or "[Errno 17] File exists: '…'" (an SQLite file's
    directory): one line, but naming neither the setting nor what was being created."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    where = blocker / created if created else blocker
    value = f"sqlite:///{blocker}/predictions.db" if variable == "PREDMESH_DATABASE_URL" else str(where)
    env = {**os.environ, "PREDMESH_GRPC_ADDR": "127.0.0.1:0", "PREDMESH_METRICS_ADDR": "",
           "PREDMESH_MODEL_STORE": str(tmp_path / "models"), "PREDMESH_SPOOL_DIR": str(tmp_path / "spool"),
           "PREDMESH_DATABASE_URL": f"sqlite:///{tmp_path}/predmesh.db", "PREDMESH_GATEWAY_DIR": str(tmp_path / "gw"),
           variable: value}
    result = subprocess.run([sys.executable, "-m", "cli", *argv], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    what = f"database URL {value}" if variable == "PREDMESH_DATABASE_URL" else variable
    assert result.stderr.strip().splitlines()[-1] == \
        f"predmesh {argv[0]}: {what}: cannot create the directory {where} ({reason})"


def test_up_says_in_one_line_that_the_demo_model_could_not_be_trained(tmp_path):
    """`predmesh up` on an empty store it could not train into ended with a CalledProcessError traceback after the
    training's own line."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    env = {**os.environ, "PREDMESH_GRPC_ADDR": "127.0.0.1:0", "PREDMESH_METRICS_ADDR": "",
           "PREDMESH_MODEL_STORE": str(blocker / "models")}
    result = subprocess.run([sys.executable, "-m", "cli", "up", "--no-gateway", "--no-consumer", "--no-ui",
                             "--no-luigid", "--no-prometheus"], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert "PREDMESH_MODEL_STORE: cannot create the directory" in lines[-2], lines
    assert lines[-1] == (f"predmesh up: training the demo model into {blocker / 'models'} failed (exit 1); nothing "
                         "was started")


def test_ctrl_c_while_up_is_starting_is_an_interrupted_start(tmp_path):
    """Ctrl-C before the mesh was up ended `predmesh up` with exit 0, as if the mesh had run and been stopped; the
    README promises one line and exit 130 for Ctrl-C during start-up. (A mesh that is up still stops with 0.)"""
    import signal
    import time

    store = tmp_path / "models"
    assert run("train", store=store).returncode == 0  # trained before: the signal lands while the replica starts
    env = {**os.environ, "PREDMESH_GRPC_ADDR": "127.0.0.1:0", "PREDMESH_METRICS_ADDR": "",
           "PREDMESH_MODEL_STORE": str(store), "PREDMESH_SPOOL_DIR": str(tmp_path / "spool"),
           "PREDMESH_DATABASE_URL": f"sqlite:///{tmp_path}/predmesh.db", "PREDMESH_PROCESSES": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "cli", "up", "--no-gateway", "--no-consumer", "--no-ui",
                             "--no-luigid", "--no-prometheus"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    children = f"/proc/{proc.pid}/task/{proc.pid}/children"
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline and not Path(children).read_text().strip():
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)  # the replica was started; a gRPC port of 0 is never probed healthy
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (proc.returncode, out, err)
    assert "predmesh up: interrupted during start-up" in err.splitlines(), err
    assert "Traceback" not in err, err


def test_predmesh_retention_says_what_it_did_once(tmp_path):
    """`predmesh retention` printed its summary on stdout and logged the same line on stderr: twice on a terminal."""
    env = {**os.environ, "PREDMESH_DATABASE_URL": f"sqlite:///{tmp_path}/predmesh.db", "PREDMESH_RETENTION_DAYS": "3"}
    migrated = subprocess.run([sys.executable, "-m", "cli", "migrate"], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=120)
    assert migrated.returncode == 0, migrated.stderr
    result = subprocess.run([sys.executable, "-m", "cli", "retention"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    summary = result.stdout.strip()
    assert summary.startswith("retention: predictions before ") and "removed: 0 rows" in summary, result.stdout
    assert "retention: predictions before" not in result.stderr, result.stderr
