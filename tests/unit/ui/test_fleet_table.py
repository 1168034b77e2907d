"""The Model view's fleet table: the desired version, the running canary and each decision with its figures, from
GetDesiredState through the SDK's types (ui/views.py _fleet_table)."""
from __future__ import annotations

from predmesh.types import DesiredState
from predmesh.v1 import admin_pb2, model_pb2
from ui.views import _fleet_table


def answer(*runs) -> DesiredState:
    return DesiredState.from_proto(admin_pb2.GetDesiredStateResponse(
        desired=model_pb2.DesiredState(model="iris", version="2", updated_by="ops", reason="baseline"),
        serving_version="2", canaries=list(runs)))


def run(number, candidate, status, summary, accuracy):
    side = model_pb2.CanarySide(version=candidate, requests=120, calls=118, errors=0, feedback=40, p99_ms=3.25)
    side.accuracy = accuracy
    serving = model_pb2.CanarySide(version="2", requests=300, calls=290, feedback=90, p99_ms=3.0)
    serving.accuracy = 0.97
    return model_pb2.CanaryRun(id=number, baseline="2", candidate=candidate, share=0.2, status=status,
                               summary=summary, serving=serving, candidate_side=side, compared=100, agreed=35,
                               elapsed_seconds=4.0, criteria=model_pb2.CanaryCriteria(window_seconds=60))


def test_the_table_shows_each_canary_with_the_figures_of_its_decision():
    table = _fleet_table(answer(run(2, "4", "running", "", 0.95),
                                run(1, "3", "rolled_back", "rolled back: accuracy 0.350 <b>", 0.35)))
    lines = table.splitlines()
    assert lines[0] == "**Fleet**: every replica serves version 2, set by ops (baseline)"
    assert lines[4].startswith("| 4 vs 2 | running | 20% | 4 s | 0.950 (40) | 0.970 (90) | 0/118 | 3.2 / 3.0 | "
                               "0.350 (100) |")
    assert lines[5].startswith("| 3 vs 2 | rolled\\_back | 20% |")
    assert "<b>" not in table  # the summary shows as text
    assert _fleet_table(None) == "" and _fleet_table(answer()).count("\n") == 0
