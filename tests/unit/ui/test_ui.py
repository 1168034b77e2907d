"""Dashboard pieces without a browser: chart maths, settings, the store's offline/recovery logic, form generation."""
from __future__ import annotations

import asyncio
import itertools
import logging
import math
from datetime import UTC, datetime, timedelta
from typing import ClassVar, cast

import pytest

from predmesh import Client, errors
from predmesh.env import ConfigError
from predmesh.types import FeatureSpec, LatencySummary, ModelInfo, Page, Prediction, Stats, StoredPrediction
from ui import analytics
from ui.settings import UiSettings
from ui.store import Store, now_utc

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


# -- analytics ----------------------------------------------------------------------------------------------------
def test_buckets_cover_the_window_and_end_now():
    b = analytics.buckets("15 min", NOW)
    assert len(b) == 15 and b[-1].end == NOW and b[0].start == NOW - timedelta(minutes=15)
    assert all(x.end == y.start for x, y in itertools.pairwise(b)) and b[0].minutes == 1
    assert len(analytics.buckets("1 h", NOW)) == 12 and analytics.buckets("1 h", NOW)[0].minutes == 5
    assert analytics.buckets("all", NOW)[0].start == NOW - timedelta(hours=24)
    assert analytics.window_start("all", NOW) is None
    assert analytics.window_start("6 h", NOW) == NOW - timedelta(hours=6)


def test_rates_are_per_minute_by_transport():
    b = analytics.buckets("1 h", NOW)[:2]  # 5-minute buckets
    data = analytics.rate_series(b, [{"grpc": 10, "ui": 5}, {"rest": 1}])
    assert data["t"] == [b[0].start + timedelta(minutes=2.5), b[1].start + timedelta(minutes=2.5)]
    assert data["grpc"] == [2.0, 0.0] and data["ui"] == [1.0, 0.0] and data["rest"] == [0.0, 0.2]
    assert set(data) == {"t", *analytics.TRANSPORTS}


def test_latency_percentiles_by_transport_and_gaps():
    b = analytics.buckets("15 min", NOW)[:2]
    samples = [[("grpc", float(v)) for v in range(1, 101)] + [("ui", 7.0)], []]
    data = analytics.latency_series(b, samples)
    assert data["grpc_p50"][0] == pytest.approx(50.5) and data["grpc_p95"][0] == pytest.approx(95.05)
    assert data["ui_p50"][0] == 7.0
    assert math.isnan(data["rest_p50"][0]) and math.isnan(data["grpc_p95"][1])  # no data: a gap, not a zero
    rows = analytics.latency_table(samples)
    assert [r["transport"] for r in rows] == ["grpc", "ui"] and rows[0]["sampled"] == 100
    assert rows[0]["p99_ms"] == pytest.approx(99.01)


def test_class_counts_keep_model_order_and_zeroes():
    assert analytics.class_counts(("a", "b", "c"), {"b": 2, "zz": 1}) == (["a", "b", "c", "zz"], [0, 2, 0, 1])


def test_form_defaults_use_the_training_mean_else_the_midpoint():
    assert analytics.default_value(4.3, 7.9, 5.84, 0.8) == 5.84
    assert analytics.default_value(4.3, 7.9, 0.0, 0.0) == pytest.approx(6.1)  # older manifest: no distribution
    assert analytics.default_value(0.0, 10.0, 50.0, 1.0) == 5.0                # implausible mean
    assert analytics.step(4.3, 7.9) == pytest.approx(0.01) and analytics.step(0, 1000) == 10
    assert analytics.step(1, 1) == 0.1


# -- settings -----------------------------------------------------------------------------------------------------
def test_settings_defaults_are_loopback_with_own_origins():
    s = UiSettings.from_env({})
    assert (s.host, s.port, s.server, s.password) == ("127.0.0.1", 5006, "127.0.0.1:50051", None)
    assert s.websocket_origins == ["127.0.0.1:5006", "localhost:5006"]
    assert s.cookie_secret and s.cookie_secret != UiSettings.from_env({}).cookie_secret
    assert "cookie_secret" not in repr(s) or s.cookie_secret not in repr(s)


def test_settings_from_env(tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    s = UiSettings.from_env({"PREDMESH_UI_ADDR": "0.0.0.0:7000", "PREDMESH_SERVER_ADDR": "envoy:8080",
                             "PREDMESH_GRPC_ADDR": "ignored:1", "PREDMESH_UI_PASSWORD_FILE": str(secret),
                             "PREDMESH_UI_ALLOWED_ORIGINS": "dash.example:443, localhost:7000"})
    assert (s.host, s.port, s.server, s.password) == ("0.0.0.0", 7000, "envoy:8080", "s3cret")
    assert s.websocket_origins == ["dash.example:443", "localhost:7000"]
    assert "s3cret" not in repr(s)
    flags = UiSettings.from_env({"PREDMESH_UI_ALLOWED_ORIGINS": "x:1"}, addr="127.0.0.1:9", origins=["y:2"])
    assert flags.port == 9 and flags.websocket_origins == ["y:2"]
    with pytest.raises(ConfigError, match="host:port"):
        UiSettings.from_env({"PREDMESH_UI_ADDR": "5006"})
    with pytest.raises(ConfigError):
        UiSettings.from_env({"PREDMESH_UI_REFRESH_S": "0"})


def test_bokeh_has_the_websocket_origin_fix():
    """T22: CVE-2026-21883 (cross-site websocket hijacking through the origin allowlist) is fixed in Bokeh 3.8.2."""
    import bokeh

    major, minor, patch = (int(x) for x in bokeh.__version__.split(".")[:3])
    assert (major, minor, patch) >= (3, 8, 2), bokeh.__version__


# -- store --------------------------------------------------------------------------------------------------------
def _info(name="iris", version="2", features=("a", "b")) -> ModelInfo:
    return ModelInfo(name, version, tuple(FeatureSpec(f, 0.0, 10.0, 4.0, 1.0, ()) for f in features),
                     ("x", "y"), "ab" * 32, {"holdout_accuracy": 0.9}, NOW, "1.9", "LogisticRegression", True, ())


def _stored(pid: str) -> StoredPrediction:
    p = Prediction(pid, pid, "iris", "2", "x", {"x": 0.8, "y": 0.2}, 1.5)
    return StoredPrediction(p, {"a": 1.0, "b": 2.0}, "ui", NOW, "")


class FakeClient:
    """Stands in for predmesh.Client; `down` makes every call raise Unavailable, like a stopped server."""

    instances: ClassVar[list[FakeClient]] = []

    def __init__(self, world: dict, admin_token: str | None = None):
        self.world, self.admin_token, self.closed = world, admin_token, False
        FakeClient.instances.append(self)

    def _check(self):
        if self.world["down"]:
            raise errors.Unavailable("failed to connect to all addresses", errors.Unavailable.code)
        if self.world.get("slow"):
            raise errors.DeadlineExceeded("Deadline Exceeded", errors.DeadlineExceeded.code)

    def list_models(self):
        self._check()
        return [self.world["info"]]

    def list_predictions(self, page_size=50, page_token="", **filters):
        self._check()
        self.world.setdefault("listed", []).append(filters)
        start = int(page_token or 0)
        rows = self.world["rows"][start:start + page_size]
        more = start + page_size < len(self.world["rows"])
        return Page(tuple(rows), str(start + page_size) if more else "")

    def get_stats(self, **window):
        self._check()
        by_label = {"x": len(self.world["rows"])}
        return Stats(len(self.world["rows"]), by_label, {}, {"ui": len(self.world["rows"])},
                     LatencySummary(1.0, 2.0, 3.0), ())

    def predict(self, model, features):
        self._check()
        self.world["sent"].append(features)
        return Prediction("p-new", "r", model, self.world["info"].version, "x", {"x": 0.8, "y": 0.2}, 1.0)

    def reload_model(self, model, version="", timeout=None):
        self._check()
        if self.admin_token != "right":
            raise errors.Unauthenticated("invalid token", errors.Unauthenticated.code)
        raise errors.FailedPrecondition("golden rows do not reproduce", errors.FailedPrecondition.code)

    def list_model_versions(self, model):
        self._check()
        if self.admin_token not in ("right", "readonly"):
            raise errors.Unauthenticated("invalid token", errors.Unauthenticated.code)
        return [self.world["info"]]

    def submit_feedback(self, prediction_id, label):
        self._check()
        raise AssertionError("not reached in these tests")

    def list_batch_runs(self, model="", page_size=50):
        self._check()
        return Page((), "")

    def close(self):
        self.closed = True


@pytest.fixture
def world():
    FakeClient.instances = []
    return {"down": False, "info": _info(), "rows": [_stored("p1")], "sent": []}


def _store(world) -> Store:
    return Store(lambda admin_token=None: cast(Client, FakeClient(world, admin_token)), target="fake:1",
                 refresh_s=2.0)


def test_store_keeps_data_when_the_server_goes_away_and_recovers_by_itself(world):
    async def scenario():
        store = _store(world)
        await store.start()
        assert store.model == "iris" and [r.prediction.prediction_id for r in store.page] == ["p1"]
        assert store.problem == "" and store.stats.total == 1
        world["down"] = True
        await store.tick()
        assert "cannot answer right now" in store.problem and "UNAVAILABLE" in store.problem
        assert [r.prediction.prediction_id for r in store.page] == ["p1"] and store.info is not None  # kept
        await store.predict({"a": 1.0, "b": 2.0})
        assert store.predict_notice.kind == "error" and "not answering" in store.predict_notice.text
        clients_before = len(FakeClient.instances)
        await store.tick()                       # still down: a fresh channel is tried and closed
        assert len(FakeClient.instances) == clients_before + 1 and FakeClient.instances[-1].closed
        world["down"] = False
        world["rows"] = [_stored("p2"), _stored("p1")]
        await store.tick()
        assert store.problem == "" and [r.prediction.prediction_id for r in store.page] == ["p2", "p1"]
        store.close()
    asyncio.run(scenario())


def test_a_slow_server_is_reported_and_the_page_keeps_its_data(world):
    async def scenario():
        store = _store(world)
        await store.start()
        world["slow"] = True
        await store.tick()
        assert "DEADLINE_EXCEEDED" in store.problem and len(store.page) == 1
        await store.submit_feedback("p1", "x")
        assert store.feedback_notice.kind == "error" and "not answering" in store.feedback_notice.text
        world["slow"] = False
        await store.tick()
        assert store.problem == ""
    asyncio.run(scenario())


def test_history_pages_with_page_tokens_and_filters_restart_paging(world):
    from ui.store import PAGE_SIZE

    world["rows"] = [_stored(f"p{i:03d}") for i in range(PAGE_SIZE * 2 + 5)]

    async def scenario():
        store = _store(world)
        await store.start()
        assert store.page[0].prediction.prediction_id == "p000" and store.has_next
        await store.next_page()
        await store.next_page()
        assert store.page_index == 2 and store.page[0].prediction.prediction_id == f"p{2 * PAGE_SIZE:03d}"
        assert len(store.page) == 5 and not store.has_next
        await store.next_page()                      # no further page: stays
        assert store.page_index == 2
        await store.previous_page()
        assert store.page[0].prediction.prediction_id == f"p{PAGE_SIZE:03d}"
        world["rows"].insert(0, _stored("new"))
        await store.tick()                           # live refresh only on the first page
        assert store.page[0].prediction.prediction_id == f"p{PAGE_SIZE:03d}"
        await store.set_filters(h_label="x", h_transport="ui", window="15 min")
        assert store.page_index == 0 and store.page[0].prediction.prediction_id == "new"
        f = next(f for f in reversed(world["listed"]) if "label" in f)   # the history page's call
        assert (f["label"], f["transport"]) == ("x", "ui")
        assert now_utc() - f["start_time"] - timedelta(minutes=15) < timedelta(seconds=60)
    asyncio.run(scenario())


def test_store_refuses_incomplete_rows_and_versions_that_do_not_serve(world):
    async def scenario():
        store = _store(world)
        await store.start()
        await store.predict({"a": 1.0, "b": None})
        assert store.predict_notice.kind == "error" and "Fill in b" in store.predict_notice.text
        await store.predict({"a": 1.0, "b": 2.0}, version="1")
        assert "Version 1 of iris is not serving" in store.predict_notice.text
        assert world["sent"] == []
        await store.predict({"a": 1.0, "b": 2.0}, version="2")
        assert store.prediction.prediction_id == "p-new" and world["sent"] == [{"a": 1.0, "b": 2.0}]
    asyncio.run(scenario())


def test_store_admin_messages_and_the_token_stays_out_of_logs(world, caplog):
    caplog.set_level(logging.DEBUG)

    async def scenario():
        store = _store(world)
        await store.start()
        await store.reload()
        assert "Reload refused by the server: type the admin token first" in store.admin_notice.text
        assert "needs the admin or read-only token" in store.versions_note
        await store.set_token("wrong-token-7f3a")
        assert store.versions == [] and "token was refused" in store.versions_note
        await store.reload("1")
        assert "admin token was not accepted" in store.admin_notice.text
        await store.set_token("right")
        assert [v.version for v in store.versions] == ["2"]
        await store.reload("1")
        assert store.admin_notice.kind == "error"
        assert "Reload to 1 refused by the server; 2 still serves" in store.admin_notice.text
        assert "golden rows do not reproduce" in store.admin_notice.text
        assert all(c.closed for c in FakeClient.instances if c.admin_token)  # admin channels are per call
    asyncio.run(scenario())
    assert "wrong-token-7f3a" not in caplog.text and "Bearer" not in caplog.text


# -- views --------------------------------------------------------------------------------------------------------
def test_the_form_follows_the_model_schema():
    from ui.views import FeatureForm

    form = FeatureForm()
    form.update(_info(features=("sepal_length", "petal_width")))
    assert list(form.inputs) == ["sepal_length", "petal_width"] and form.inputs["sepal_length"].value == 4.0
    first = form.inputs["sepal_length"]
    first.value = 7.5
    form.update(_info(version="3", features=("sepal_length", "petal_width")))  # same schema: typed values stay
    assert form.inputs["sepal_length"] is first and form.values()["sepal_length"] == 7.5
    form.update(_info(name="wine", features=("alcohol", "ash", "hue")))       # another model: another form
    assert list(form.inputs) == ["alcohol", "ash", "hue"]


def test_dashboard_builds_and_follows_the_store(world):
    from ui import views

    async def scenario():
        store = _store(world)
        page = views.dashboard(store, "predmesh")
        await store.start()
        await store.predict({"a": 1.0, "b": 2.0})
        return store, page
    store, page = asyncio.run(scenario())
    assert page is not None and store.prediction.label == "x"


# -- entry point --------------------------------------------------------------------------------------------------
def _cli(*args, env=None):
    import os
    import subprocess
    import sys

    from tests.support.procs import ROOT
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
