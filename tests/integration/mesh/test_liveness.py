"""`predmesh up` restarts a part that gives no answer at all to its health probe (frozen by SIGSTOP, deadlocked),
as Kubernetes' liveness probe does; a part that answers "not healthy" is alive and left alone (cli/up.py
Liveness). Real child processes; only the clock between checks is shortened."""
from __future__ import annotations

import functools
import itertools
import signal
import sys
import time

from cli import up
from cli.probe import http_ok
from tests.support.procs import free_port, wait_for


def drive(parts, liveness, until, timeout=20.0, log=None):
    """Run the supervising loop (supervise_once and the liveness checks) until until() holds."""
    def step():
        up.supervise_once(parts, {}, log=log or (lambda m: None))
        liveness.check(parts, log=log or (lambda m: None))
        return until()
    return wait_for(step, timeout, interval=0.05, what="the supervisor's step")


def test_a_frozen_part_is_killed_after_unanswered_checks_and_restarted():
    port = free_port()
    part = up.Part("web", [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)],
                   probe=functools.partial(http_ok, f"http://127.0.0.1:{port}/", timeout=0.3))
    liveness = up.Liveness(interval=0.1, failures=3)
    said: list[str] = []
    try:
        up.start(part)
        wait_for(lambda: part.healthy()[0], 15, what="the part listening")
        first = part.proc
        assert first is not None
        first.send_signal(signal.SIGSTOP)
        drive([part], liveness, lambda: part.restarts == 1 and part.proc is not first, log=said.append)
        assert first.wait(5) == -signal.SIGKILL
        drive([part], liveness, lambda: not part.recovering and part.healthy()[0], log=said.append)
    finally:
        liveness.close()
        up.stop_all([part], timeout=5)
    killed = [m for m in said if "gave no answer" in m]
    assert killed == [("predmesh up: web gave no answer to 3 health checks in a row (no answer (timed out)): "
                       "killing it, to restart it")], said
    assert any("web exited with -9; restarting it" in m for m in said)
    assert any("web is healthy again" in m for m in said)


def test_a_part_that_answers_unhealthy_or_recovers_in_time_is_left_alone():
    answers = itertools.chain([(False, "HTTP 503")] * 6 + [(False, "no answer (timed out)")] * 2
                              + [(True, "HTTP 200")] + [(False, "no answer (timed out)")] * 2,
                              itertools.repeat((True, "HTTP 200")))
    part = up.Part("busy", [sys.executable, "-c", "import time; time.sleep(60)"], probe=lambda: next(answers))
    liveness = up.Liveness(interval=0.0, failures=3)
    try:
        up.start(part)
        proc = part.proc
        assert proc is not None
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            liveness.check([part], log=lambda m: (_ for _ in ()).throw(AssertionError(m)))
            time.sleep(0.01)
        assert part.proc is proc and proc.poll() is None
    finally:
        liveness.close()
        up.stop_all([part], timeout=5)


def test_what_counts_as_no_answer():
    assert up.unanswered("no answer (timed out)") and up.unanswered("no answer ([Errno 111] Connection refused)")
    assert up.unanswered("gRPC health: DEADLINE_EXCEEDED") and up.unanswered("gRPC health: UNAVAILABLE")
    assert not up.unanswered("gRPC health NOT_SERVING") and not up.unanswered("HTTP 503")
    assert not up.unanswered("HTTP 200 without 'predmesh_consumer_connected 1.0'")
