"""`predmesh rollout --canary ...` parses the operator's criteria into the SDK's CanaryCriteria, durations with
units, and `predmesh desired` prints each canary with its figures (cli/fleet.py)."""
from __future__ import annotations

import argparse

import pytest

from cli.fleet import _criteria, _seconds, describe, parser
from predmesh import CanaryCriteria
from predmesh.types import DesiredState
from predmesh.v1 import admin_pb2, model_pb2


def test_rollout_flags_make_the_criteria():
    args = parser("rollout", "predmesh rollout").parse_args(
        ["iris", "2", "--canary", "3", "--share", "0.2", "--window", "5m", "--min-feedback", "50",
         "--max-accuracy-drop", "0.05", "--min-agreement", "0.8"])
    assert (args.candidate, args.share) == ("3", 0.2)
    assert _criteria(args) == CanaryCriteria(300.0, 50, 20, 0.05, None, None, 0.8)
    plain = parser("rollout", "predmesh rollout").parse_args(["iris", "2", "--candidate", "3", "--share", "0.1"])
    assert plain.candidate == "3" and _criteria(plain) is None  # no window: decided by hand


@pytest.mark.parametrize("text, seconds", [("90", 90.0), ("90s", 90.0), ("5m", 300.0), ("1h", 3600.0),
                                           ("2.5M", 150.0)])
def test_durations(text, seconds):
    assert _seconds(text) == seconds


@pytest.mark.parametrize("text", ["", "m", "-3", "0", "ten"])
def test_bad_durations_are_refused(text):
    with pytest.raises(argparse.ArgumentTypeError):
        _seconds(text)


def test_desired_prints_each_canary_with_its_figures():
    side = model_pb2.CanarySide(version="3", requests=40, calls=41, errors=1, feedback=30, p99_ms=4.5)
    side.accuracy = 0.5
    serving = model_pb2.CanarySide(version="2", requests=90, calls=90, feedback=70, p99_ms=3.0)
    serving.accuracy = 0.97
    state = DesiredState.from_proto(admin_pb2.GetDesiredStateResponse(
        desired=model_pb2.DesiredState(model="iris", version="2", updated_by="r1", reason="rolled back: accuracy"),
        serving_version="2",
        canaries=[model_pb2.CanaryRun(id=7, baseline="2", candidate="3", share=0.2, status="rolled_back",
                                      decided_by="r1", summary="rolled back: accuracy 0.500 over 30 feedback",
                                      serving=serving, candidate_side=side, compared=40, agreed=18,
                                      elapsed_seconds=3.4)]))
    assert describe(state) == [
        "iris: desired version 2, set by r1: rolled back: accuracy",
        "  canary #7 3 vs 2 (share 0.2): rolled_back after 3 s by r1",
        ("    candidate: 40 rows, 1/41 failed, accuracy 0.500 over 30 feedback, p99 4.5 ms; serving: 90 rows, "
         "accuracy 0.970 over 70 feedback, p99 3.0 ms; agreement 18/40"),
        "    rolled back: accuracy 0.500 over 30 feedback"]


def test_an_address_without_the_admin_api_is_named_with_where_to_go(monkeypatch, capsys):
    """PREDMESH_SERVER_ADDR often names the gateway's public listener (what batch and the dashboard use), which
    has no admin routes: `predmesh rollout` said only "predmesh rollout: no such route"."""
    from concurrent.futures import ThreadPoolExecutor

    import grpc

    from cli.fleet import main

    server = grpc.server(ThreadPoolExecutor(2))  # serves nothing: every method is UNIMPLEMENTED, as Envoy's 404
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        monkeypatch.setenv("PREDMESH_ADMIN_TOKEN", "t0ken")
        monkeypatch.setenv("PREDMESH_SERVER_ADDR", f"127.0.0.1:{port}")
        assert main(["rollout", "iris", "2", "--timeout", "5"]) == 1
    finally:
        server.stop(0)
    err = capsys.readouterr().err
    assert f"predmesh rollout: 127.0.0.1:{port} does not serve the admin API" in err
    assert "--server with a replica's gRPC address (PREDMESH_GRPC_ADDR) or the gateway's admin listener" in err
    assert err.count("\n") == 1, err  # one line: Envoy's grpc-message ends in a newline of its own


def test_a_change_says_whether_replicas_move_or_keep_their_version():
    """Starting a canary leaves the desired version as it was: the CLI said "every replica now moves to version 2
    (was 2)"."""
    from cli.fleet import changed

    canary = DesiredState("iris", "2", False, "2", previous_version="2", candidate="3", candidate_share=0.2)
    assert changed(canary, "127.0.0.1:50051", 300.0) == [
        "iris: canary 3 takes 0.2 of the calls beside version 2; decided automatically within 300 s",
        "iris: every replica keeps version 2; 127.0.0.1:50051 serves 2"]
    rollout = DesiredState("iris", "3", True, "3", previous_version="2")
    assert changed(rollout, "t", None) == ["iris: every replica now moves to version 3 (pinned) (was 2); t serves 3"]
    first = DesiredState("iris", "1", False, "1")
    assert changed(first, "t", None) == ["iris: every replica now moves to version 1 (was none); t serves 1"]



def test_an_unusable_admin_token_file_is_one_line(monkeypatch, capsys, tmp_path):
    from cli.fleet import main

    (tmp_path / "token").write_text("")
    monkeypatch.delenv("PREDMESH_ADMIN_TOKEN", raising=False)
    monkeypatch.setenv("PREDMESH_ADMIN_TOKEN_FILE", str(tmp_path / "token"))
    assert main(["pin", "iris", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("predmesh pin: PREDMESH_ADMIN_TOKEN_FILE: ") and "is empty" in err
    assert err.count("\n") == 1, err
