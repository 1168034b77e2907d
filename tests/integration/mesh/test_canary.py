"""Canary rollouts gated by live quality: two server processes sharing PostgreSQL, a client sending rows of iris
with request ids and submitting their true labels as feedback while a canary runs.

A candidate trained on shuffled labels is rolled back automatically as soon as its feedback shows the accuracy
drop (before its window ends), a good one is promoted at the end of its window; each decision is recorded once
(two replicas analyse every poll) with its figures, visible through GetDesiredState and `predmesh desired`; no
client request fails throughout, and after each decision every replica answers with the decided version only.
"""
from __future__ import annotations

import random
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter

import requests
from sklearn.datasets import load_iris

from cli import fleet as fleet_cli
from predmesh import CanaryCriteria, Client
from tests.support.pg import TempSchema
from tests.support.procs import ADMIN_TOKEN, ROOT, ServerProc, wait_for

POLL_S = 0.5
WINDOW_S = 8.0
SLACK_S = 6.0  # a poll, the writer's flush and the analysis on a busy 2-core machine
CRITERIA = CanaryCriteria(window_s=WINDOW_S, min_feedback=30, min_requests=15, max_accuracy_drop=0.2,
                          max_error_rate=0.01, max_p99_ratio=50.0, min_agreement=0.7)
# the bad canary without the agreement check: its rollback is driven by the feedback arriving
FEEDBACK_ONLY = CanaryCriteria(window_s=WINDOW_S, min_feedback=30, min_requests=15, max_accuracy_drop=0.2,
                               max_error_rate=0.01)
NAMES = ("sepal_length", "sepal_width", "petal_length", "petal_width")


def migrated(url: str) -> None:
    """`predmesh migrate` once before the replicas start (as the deployment's migration job does)."""
    subprocess.run([sys.executable, "-m", "database", "migrate", "--url", url], cwd=ROOT, check=True, timeout=120,
                   capture_output=True)


class Traffic:
    """One client thread: Predict with a request_id on each replica in turn, then the true label as feedback
    (in batches; a prediction not stored yet is retried on the next batch). Counts failures and versions."""

    def __init__(self, targets: list[str]):
        iris = load_iris()
        self.rows = [(dict(zip(NAMES, map(float, x))), str(iris.target_names[y])) for x, y in zip(iris.data,
                                                                                                 iris.target)]
        self.clients = [Client(t, timeout=10, writer_token=ADMIN_TOKEN) for t in targets]
        self.failures: list[str] = []
        self.versions: Counter = Counter()
        self.pending: dict[str, str] = {}  # prediction_id -> true label, feedback not recorded yet
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.sent = 0

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(30)
        for c in self.clients:
            c.close()

    def _run(self) -> None:
        rng = random.Random(7)
        last_feedback = time.monotonic()
        while not self._stop.is_set():
            features, truth = rng.choice(self.rows)
            client = self.clients[self.sent % len(self.clients)]
            try:
                answer = client.predict("iris", features, request_id=f"c-{self.sent}")
            except Exception as exc:  # counted, never raised: the test asserts there are none
                self.failures.append(f"predict: {exc!r}")
            else:
                self.versions[answer.model_version] += 1
                self.pending[answer.prediction_id] = truth
            self.sent += 1
            if time.monotonic() - last_feedback > 0.25 and self.pending:
                last_feedback = time.monotonic()
                sent = dict(list(self.pending.items())[:1000])
                try:
                    done = client.submit_feedback_batch(sent)
                except Exception as exc:
                    self.failures.append(f"feedback: {exc!r}")
                else:
                    recorded = set(sent) - set(done.not_found)  # not stored yet: sent again next time
                    self.pending = {p: t for p, t in self.pending.items() if p not in recorded}
            time.sleep(0.004)


def say(capsys, text: str) -> None:
    """A figure for the log of the run (-s), past capsys (which the in-process CLI's output goes to)."""
    with capsys.disabled():
        print(text)


def canary(target: str, number: int | None = None):
    """The newest canary run (or run `number`) as GetDesiredState answers it."""
    with Client(target, admin_token=ADMIN_TOKEN, timeout=10) as client:
        state = client.get_desired_state("iris")
    runs = [r for r in state.canaries if number is None or r.id == number]
    return state, (runs[0] if runs else None)


def decisions(replicas: list[ServerProc], decision: str) -> float:
    total = 0.0
    for r in replicas:
        text = requests.get(f"http://127.0.0.1:{r.metrics_port}/metrics", timeout=5).text
        for line in text.splitlines():
            if line.startswith(f'predmesh_canary_decisions_total{{decision="{decision}",model="iris"}}'):
                total += float(line.split()[-1])
    return total


def answering(replicas: list[ServerProc], n: int = 60) -> Counter:
    seen: Counter = Counter()
    for r in replicas:
        with Client(r.target, timeout=10) as client:
            for i in range(n):
                seen[client.predict("iris", dict(zip(NAMES, (5.1, 3.5, 1.4, 0.2))),
                                    request_id=f"check-{time.time_ns()}-{i}").model_version] += 1
    return seen


def test_a_bad_canary_is_rolled_back_and_a_good_one_promoted_with_no_failed_request(trained_store, tmp_path,
                                                                                    monkeypatch, capsys):
    store = tmp_path / "models"
    shutil.copytree(trained_store, store)  # iris 1 (RandomForest), 2 (LogisticRegression)
    from inference.models.store import ModelStore
    from inference.models.train import train
    train(ModelStore(store), "iris", "lr", seed=3, shuffle_labels=True)  # 3: trained on shuffled labels
    train(ModelStore(store), "iris", "lr", seed=4)  # 4: a good retrain
    with TempSchema() as schema:
        migrated(schema.url)
        env = {"PREDMESH_DATABASE_URL": schema.url, "PREDMESH_DESIRED_STATE_POLL_SECONDS": str(POLL_S),
               "PREDMESH_DB_FLUSH_MS": "50", "PREDMESH_PROCESSES": "1"}
        replicas = [ServerProc(store, tmp_path / n / "server.log",
                               {**env, "PREDMESH_SPOOL_DIR": str(tmp_path / n / "spool")}) for n in ("a", "b")]
        for n in ("a", "b"):
            (tmp_path / n).mkdir()
        try:
            for r in replicas:
                r.start(timeout=90)  # generous: a loaded 2-core machine
            a, b = replicas
            with Client(a.target, admin_token=ADMIN_TOKEN, timeout=30) as admin:
                admin.rollout_model("iris", "2", reason="baseline")
            with Traffic([a.target, b.target]) as traffic:
                wait_for(lambda: traffic.sent >= 50, 30, what="traffic flowing")

                # the bad candidate: rolled back as soon as its feedback shows the accuracy drop
                with Client(b.target, admin_token=ADMIN_TOKEN, timeout=30) as admin:
                    state = admin.rollout_model("iris", "2", candidate="3", candidate_share=0.5, canary=FEEDBACK_ONLY,
                                                reason="bad canary")
                assert (state.version, state.candidate, state.candidate_share) == ("2", "3", 0.5)
                _, run = canary(a.target)
                assert run is not None and (run.status, run.candidate, run.baseline) == ("running", "3", "2")
                bad = wait_for(lambda: (lambda r: r if r.status != "running" else None)(canary(a.target, run.id)[1]),
                               WINDOW_S + 30, interval=0.2, what="the bad canary decided")
                assert bad.status == "rolled_back", bad.summary
                took = (bad.decided_at - bad.started_at).total_seconds()
                say(capsys, f"bad canary rolled back after {took:.1f} s: {bad.summary}")
                assert took <= WINDOW_S + SLACK_S
                assert bad.summary.startswith("rolled back: accuracy 0."), bad.summary
                c, s = bad.candidate_side, bad.serving
                assert c.version == "3" and s.version == "2"
                assert c.feedback >= 30 and s.feedback >= 30 and c.accuracy is not None and s.accuracy is not None
                assert s.accuracy - c.accuracy > 0.2 and s.accuracy > 0.85
                assert c.calls >= 15 and c.errors == 0 and c.requests >= 15
                assert bad.criteria.max_accuracy_drop == 0.2 and bad.criteria.window_s == WINDOW_S
                state, _ = canary(a.target)
                assert (state.version, state.candidate) == ("2", "")
                assert decisions(replicas, "rollback") == 1  # two replicas analysed; one decision recorded

                # every replica drops the candidate: version 2 answers everything
                wait_for(lambda: set(answering(replicas, 10)) == {"2"}, 15, what="the candidate dropped everywhere")

                # the good candidate: promoted at the end of its window
                with Client(a.target, admin_token=ADMIN_TOKEN, timeout=30) as admin:
                    admin.rollout_model("iris", "2", candidate="4", candidate_share=0.5, canary=CRITERIA,
                                        reason="good canary")
                _, run = canary(b.target)
                assert run is not None and run.candidate == "4"
                good = wait_for(lambda: (lambda r: r if r.status != "running" else None)(canary(b.target, run.id)[1]),
                                WINDOW_S + 30, interval=0.2, what="the good canary decided")
                assert good.status == "promoted", good.summary
                took = (good.decided_at - good.started_at).total_seconds()
                say(capsys, f"good canary promoted after {took:.1f} s: {good.summary}")
                assert WINDOW_S <= took <= WINDOW_S + SLACK_S
                c, s = good.candidate_side, good.serving
                assert c.feedback >= 30 and c.accuracy is not None and c.accuracy > 0.85
                assert good.compared >= 15 and good.agreed / good.compared >= 0.7
                state, _ = canary(b.target)
                assert (state.version, state.candidate) == ("4", "")
                assert decisions(replicas, "promote") == 1
                wait_for(lambda: set(answering(replicas, 10)) == {"4"}, 15, what="version 4 serving everywhere")
                time.sleep(0.5)
            assert traffic.failures == [], traffic.failures[:5]
            assert traffic.versions["3"] > 0 and traffic.versions["4"] > 0 and traffic.versions["2"] > 0
            say(capsys, f"{traffic.sent} calls, none failed, answered by {dict(traffic.versions)}")

            # the history and `predmesh desired` show both decisions with their figures
            monkeypatch.setenv("PREDMESH_ADMIN_TOKEN", ADMIN_TOKEN)
            assert fleet_cli.main(["desired", "iris", "--server", a.target]) == 0
            out = capsys.readouterr().out
            assert "desired version 4, set by" in out
            assert f"canary #{good.id} 4 vs 2 (share 0.5): promoted" in out, out
            assert f"canary #{bad.id} 3 vs 2 (share 0.5): rolled_back" in out, out
            assert "rolled back: accuracy" in out
        finally:
            for r in replicas:
                r.close()
