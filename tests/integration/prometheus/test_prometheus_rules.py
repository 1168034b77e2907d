"""deploy/prometheus rules: promtool accepts them, `promtool test rules` passes, every alert has a case where it
fires and one where it does not, and the tests really fail when a rule is broken."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
PROM = ROOT / "deploy" / "prometheus"
RULES = [PROM / "rules" / "recording.yml", PROM / "rules" / "alerts.yml"]
TESTS = PROM / "tests" / "alerts_test.yml"


def promtool(*args, cwd: Path | None = None) -> subprocess.CompletedProcess:
    path = shutil.which("promtool")
    assert path, "promtool missing: scripts/setup.sh installs Debian's prometheus"
    return subprocess.run([path, *map(str, args)], capture_output=True, text=True, timeout=120, cwd=cwd)


def alert_names() -> list[str]:
    doc = yaml.safe_load((PROM / "rules" / "alerts.yml").read_text())
    return [r["alert"] for g in doc["groups"] for r in g["rules"]]


def test_rules_pass_promtool_check():
    result = promtool("check", "rules", *RULES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rule_tests_pass():
    result = promtool("test", "rules", TESTS)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("alert", alert_names())
def test_every_alert_has_a_firing_and_a_silent_case(alert):
    cases = [c for t in yaml.safe_load(TESTS.read_text())["tests"] for c in t.get("alert_rule_test", [])
             if c["alertname"] == alert]
    assert any(c.get("exp_alerts") for c in cases), f"{alert}: no case where it fires"
    assert any(not c.get("exp_alerts") for c in cases), f"{alert}: no case where it stays silent"


def test_the_rule_tests_fail_when_a_threshold_is_broken(tmp_path):
    (tmp_path / "rules").mkdir()
    (tmp_path / "tests").mkdir()
    shutil.copy(RULES[0], tmp_path / "rules" / "recording.yml")
    alerts = (PROM / "rules" / "alerts.yml").read_text()
    assert "predmesh_feature_drift_psi > 0.25" in alerts
    (tmp_path / "rules" / "alerts.yml").write_text(alerts.replace("predmesh_feature_drift_psi > 0.25",
                                                                  "predmesh_feature_drift_psi > 2.5"))
    shutil.copy(TESTS, tmp_path / "tests" / "alerts_test.yml")
    result = promtool("test", "rules", tmp_path / "tests" / "alerts_test.yml")
    assert result.returncode != 0 and "PredmeshFeatureDrift" in result.stdout + result.stderr


def test_the_rule_tests_fail_when_siblings_rows_vouch_for_a_replica(tmp_path):
    """The drift guard joined on (model, version) across instances: a restarted replica with 12 rows went pending
    on its siblings' rows. The promtool case of three replicas fails with that join."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "tests").mkdir()
    shutil.copy(RULES[0], tmp_path / "rules" / "recording.yml")
    alerts = (PROM / "rules" / "alerts.yml").read_text()
    assert "and ignoring (feature) predmesh_drift_window_rows_min >= 200" in alerts
    (tmp_path / "rules" / "alerts.yml").write_text(alerts.replace(
        "and ignoring (feature) predmesh_drift_window_rows_min",
        "and on (model, version) predmesh_drift_window_rows_min"))
    shutil.copy(TESTS, tmp_path / "tests" / "alerts_test.yml")
    result = promtool("test", "rules", tmp_path / "tests" / "alerts_test.yml")
    out = result.stdout + result.stderr
    assert result.returncode != 0 and 'instance="b:9101"' in out, out


def test_the_rule_tests_fail_when_a_replicas_processes_sum_vouches_for_one(tmp_path):
    """Inside a replica the drift is the highest of its processes': guarded by their summed rows, a worker replaced
    a minute ago (12 rows, PSI 2.1) beside a busy one goes pending. The promtool case fails with that guard."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "tests").mkdir()
    shutil.copy(RULES[0], tmp_path / "rules" / "recording.yml")
    alerts = (PROM / "rules" / "alerts.yml").read_text()
    (tmp_path / "rules" / "alerts.yml").write_text(alerts.replace("predmesh_drift_window_rows_min >= 200",
                                                                  "predmesh_drift_window_rows >= 200"))
    shutil.copy(TESTS, tmp_path / "tests" / "alerts_test.yml")
    result = promtool("test", "rules", tmp_path / "tests" / "alerts_test.yml")
    out = result.stdout + result.stderr
    assert result.returncode != 0 and 'instance="d:9101"' in out, out
