"""The committed Grafana dashboards are what deploy/grafana/build_dashboards.py builds, and well-formed."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
DASHBOARDS = ROOT / "deploy" / "grafana" / "dashboards"


def test_committed_dashboards_are_current(capsys):
    spec = importlib.util.spec_from_file_location("build_dashboards", ROOT / "deploy/grafana/build_dashboards.py")
    assert spec is not None and spec.loader is not None
    builder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builder)
    assert builder.main(["--check"]) == 0, capsys.readouterr().out


def test_the_four_dashboards_have_panels_with_queries_on_the_datasource_variable():
    files = sorted(DASHBOARDS.glob("*.json"))
    assert [f.stem for f in files] == ["predmesh-gateway", "predmesh-pipeline", "predmesh-quality",
                                       "predmesh-service"]
    for path in files:
        board = json.loads(path.read_text())
        assert board["uid"] == path.stem and board["panels"], path
        assert {v["name"] for v in board["templating"]["list"]} == {"datasource", "model"}
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)), path
        for panel in board["panels"]:
            assert panel["datasource"]["uid"] == "${datasource}" and panel["targets"], panel["title"]
            assert all(t["expr"].strip() for t in panel["targets"]), panel["title"]
