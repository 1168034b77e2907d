"""Dashboard pieces without a browser: chart maths, settings, the session's offline/recovery logic, forms."""
from __future__ import annotations

import asyncio
import html
import logging
import math
import re
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from typing import ClassVar, cast

import pytest

from predmesh import errors
from predmesh.aio import AsyncClient
from predmesh.env import ConfigError
from predmesh.types import (
    BatchRun,
    FeatureSpec,
    LatencySummary,
    ModelInfo,
    Page,
    Prediction,
    Stats,
    StatsBucket,
    StoredPrediction,
    VersionQuality,
)
from ui import analytics
from ui.feed import Feed
from ui.session import Session
from ui.settings import UiSettings
from ui.store import now_utc

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


# -- analytics ----------------------------------------------------------------------------------------------------
def test_windows_and_bucket_widths():
    assert analytics.window_start("all", NOW) is None
    assert analytics.window_start("6 h", NOW) == NOW - timedelta(hours=6)
    assert analytics.bucket_width("15 min") == timedelta(minutes=1) and analytics.bucket_width("all").days == 1


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
    (tmp_path / "empty").write_text("\n")  # read as "no password" before: the dashboard opened without a login
    with pytest.raises(ConfigError, match="PREDMESH_UI_PASSWORD_FILE"):
        UiSettings.from_env({"PREDMESH_UI_PASSWORD_FILE": str(tmp_path / "empty")})
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


def _stored(pid: str, created_at: datetime | None = None, transport: str = "ui",
            latency_ms: float = 1.5) -> StoredPrediction:
    p = Prediction(pid, pid, "iris", "2", "x", {"x": 0.8, "y": 0.2}, latency_ms)
    return StoredPrediction(p, {"a": 1.0, "b": 2.0}, transport, created_at, "")


class FakeClient:
    """Stands in for predmesh.AsyncClient; `down` makes every call raise Unavailable, like a stopped server."""

    instances: ClassVar[list[FakeClient]] = []

    def __init__(self, world: dict, admin_token: str | None = None):
        self.world, self.admin_token, self.closed = world, admin_token, False
        FakeClient.instances.append(self)

    def _matching(self, filters) -> list[StoredPrediction]:
        start, end = filters.get("start_time"), filters.get("end_time")
        rows = [r for r in self.world["rows"] if r.created_at is None or (
            (start is None or r.created_at >= start) and (end is None or r.created_at < end))]
        return [r for r in rows if r.prediction.request_id == filters.get("request_id", r.prediction.request_id)]

    def _check(self):
        if self.world["down"]:
            raise errors.Unavailable("failed to connect to all addresses", errors.Unavailable.code)
        if self.world.get("slow"):
            raise errors.DeadlineExceeded("Deadline Exceeded", errors.DeadlineExceeded.code)
        if self.world.get("db_down"):   # the server is up, its database is not
            raise errors.Unavailable("the prediction database is unavailable; retry later",
                                     errors.Unavailable.code)

    async def wait_ready(self, timeout=10.0):
        if self.world["down"]:
            raise errors.Unavailable("no connection", errors.Unavailable.code)

    async def list_models(self):
        self._check()
        return [self.world["info"], *self.world.get("more_models", ())]

    async def list_predictions(self, page_size=50, page_token="", **filters):
        self._check()
        self.world.setdefault("listed", []).append(filters)
        matching = self._matching(filters)
        start = int(page_token or 0)
        rows = matching[start:start + page_size]
        more = start + page_size < len(matching)
        return Page(tuple(rows), str(start + page_size) if more else "")

    async def get_stats(self, **window):
        self._check()
        self.world.setdefault("stats", []).append(window)
        rows = self._matching(window)
        by_transport: dict[str, int] = {}
        for r in rows:
            by_transport[r.transport] = by_transport.get(r.transport, 0) + 1
        by_label: dict[str, int] = {}
        for r in rows:
            by_label[r.prediction.label] = by_label.get(r.prediction.label, 0) + 1
        width = window.get("bucket_seconds", 0)
        series = []
        if width and window.get("start_time"):   # aligned to multiples of the width, empty buckets included
            epoch = int(window["start_time"].timestamp())
            start = datetime.fromtimestamp(epoch - epoch % width, UTC)
            while start <= now_utc():
                end = start + timedelta(seconds=width)
                inside = [r for r in rows if r.created_at and start <= r.created_at < end]
                counts: dict[str, int] = {}
                for r in inside:
                    counts[r.transport] = counts.get(r.transport, 0) + 1
                lat = sorted(r.prediction.latency_ms for r in inside) or [0.0]
                series.append(StatsBucket(start, len(inside), {}, counts,
                                          LatencySummary(lat[len(lat) // 2], lat[-1], lat[-1]), {}))
                start = end
        return Stats(len(rows), by_label, {}, by_transport, LatencySummary(1.0, 2.0, 3.0),
                     tuple(self.world.get("quality", ())), tuple(series), window.get("start_time"), None)

    async def predict(self, model, features):
        self._check()
        self.world["sent"].append(features)
        return Prediction("p-new", "r", model, self.world["info"].version, "x", {"x": 0.8, "y": 0.2}, 1.0)

    async def reload_model(self, model, version="", timeout=None):
        self._check()
        if self.admin_token != "right":
            raise errors.Unauthenticated("invalid token", errors.Unauthenticated.code)
        raise errors.FailedPrecondition(self.world.get("refusal", "golden rows do not reproduce"),
                                        errors.FailedPrecondition.code)

    async def list_model_versions(self, model):
        self._check()
        if self.admin_token not in ("right", "readonly"):
            raise errors.Unauthenticated("invalid token", errors.Unauthenticated.code)
        return [self.world["info"]]

    async def get_desired_state(self, model):
        self._check()
        if self.admin_token not in ("right", "readonly"):
            raise errors.Unauthenticated("invalid token", errors.Unauthenticated.code)
        if "desired" not in self.world:  # a server without a database
            raise errors.FailedPrecondition("this server has no database", errors.FailedPrecondition.code)
        return self.world["desired"]

    async def submit_feedback(self, prediction_id, label):
        self._check()
        raise AssertionError("not reached in these tests")

    async def list_batch_runs(self, model="", page_size=50):
        self._check()
        return Page(tuple(self.world.get("runs", ())), "")

    async def close(self):
        self.closed = True


@pytest.fixture
def world():
    FakeClient.instances = []
    return {"down": False, "info": _info(), "rows": [_stored("p1")], "sent": []}


def fake_client(world, admin_token: str | None = None) -> AsyncClient:
    """A FakeClient where the session takes the SDK's AsyncClient (it has the methods the session calls)."""
    return cast(AsyncClient, FakeClient(world, admin_token))


async def _settle() -> None:
    """Let the session's bound callbacks and their awaited calls run."""
    for _ in range(20):
        await asyncio.sleep(0.01)


def _feed(world) -> Feed:
    return Feed(lambda: fake_client(world), target="fake:1", refresh_s=2.0)


def _session(world, feed: Feed | None = None) -> Session:
    return Session(feed or _feed(world), lambda admin_token=None: fake_client(world, admin_token))


async def _round(feed: Feed) -> None:
    """One refresh round of the feed, and its reads finished."""
    await feed.refresh()
    await feed.fetch(feed.wanted())


def _ids(rows) -> list[str]:
    return [r.prediction.prediction_id for r in rows]


def test_session_keeps_data_when_the_server_goes_away_and_recovers_by_itself(world):
    async def scenario():
        s = _session(world)
        await s.start()
        assert s.store.model == "iris" and _ids(s.history.page) == ["p1"]
        assert s.store.problem == "" and s.history.stats.total == 1
        world["down"] = True
        await _round(s.feed)
        assert "cannot be reached" in s.store.problem and "UNAVAILABLE" in s.store.problem
        assert _ids(s.history.page) == ["p1"] and s.store.info is not None  # kept
        await s.predict.predict({"a": 1.0, "b": 2.0})
        assert s.predict.notice.kind == "error" and "cannot be reached" in s.predict.notice.text
        clients_before = len(FakeClient.instances)
        await _round(s.feed)                 # still down: a fresh channel is tried and closed
        assert len(FakeClient.instances) == clients_before + 1 and FakeClient.instances[-1].closed
        world["down"] = False
        world["rows"] = [_stored("p2"), _stored("p1")]
        await _round(s.feed)
        assert s.store.problem == "" and _ids(s.history.page) == ["p2", "p1"]
        s.close()
        assert not s.feed.polling and s.feed.subscribers == 0
        await s.feed.close()
        calls = len(world["listed"])
        await s.feed.refresh()               # a closed session no longer refreshes
        assert len(world["listed"]) == calls
    asyncio.run(scenario())


def test_a_slow_or_failing_read_is_shown_as_such_never_as_server_down_and_keeps_its_data(world):
    """Before: a deadline on any read turned the whole page to "server cannot answer"; now it is that read's
    failure, named, with its last data kept and marked stale."""
    async def scenario():
        s = _session(world)
        await s.start()
        world["slow"] = True
        await _round(s.feed)
        assert s.store.problem == "" and _ids(s.history.page) == ["p1"] and s.history.stats.total == 1
        note = s.history.page_note
        assert note.kind == "warning" and "ListPredictions failed after" in note.text
        assert "DEADLINE_EXCEEDED" in note.text and "Stale: showing the data loaded at" in note.text
        assert "GetStats failed" in s.history.stats_note.text and "GetStats failed" in s.quality.quality_note.text
        assert s.quality.quality_loaded                                       # the last good answer stays
        world["slow"] = False
        await _round(s.feed)
        assert s.history.page_note.text == "" and s.history.stats_note.text == ""
    asyncio.run(scenario())


def test_unavailable_from_a_server_that_is_up_is_a_failed_read_not_an_unreachable_server(world):
    """Before: any UNAVAILABLE (here the server's database down) put up "the server cannot be reached"."""
    async def scenario():
        s = _session(world)
        await s.start()
        world["db_down"] = True
        await _round(s.feed)
        assert s.store.problem == "" and _ids(s.history.page) == ["p1"]
        assert "ListPredictions failed" in s.history.page_note.text
        assert "prediction database is unavailable" in s.history.page_note.text
        await s.predict.predict({"a": 1.0, "b": 2.0})
        assert "cannot be reached" not in s.predict.notice.text
        assert "prediction database is unavailable" in s.predict.notice.text
    asyncio.run(scenario())


def test_load_notes_say_loading_slow_failed_and_stale():
    from ui.feed import Load

    loaded = datetime(2026, 11, 28, 12, 0, 3, tzinfo=UTC)
    assert Load(since=10.0).note("GetStats", 10.2) == ("info", "Loading (GetStats)…")
    kind, note = Load(since=10.0).note("GetStats", 14.2)
    assert kind == "warning" and note.startswith("GetStats has taken 4.2 s so far")
    kind, note = Load("v", loaded, since=10.0).note("GetStats", 14.2)
    assert "showing the data loaded at 12:00:03 UTC meanwhile" in note
    kind, note = Load(error="boom (INTERNAL)", took_s=0.3).note("GetStats", 20.0)
    assert kind == "error" and note == "GetStats failed after 0.3 s: boom (INTERNAL). Nothing loaded yet."
    kind, note = Load("v", loaded, error="slow (DEADLINE_EXCEEDED)", took_s=3.0).note("GetStats", 20.0)
    assert kind == "warning" and "Stale: showing the data loaded at 12:00:03 UTC" in note
    assert Load("v", loaded).note("GetStats", 20.0) == ("", "")


def test_every_open_tab_shares_one_read_per_round_and_the_poller_stops_with_the_last_tab(world):
    """Before: each tab refreshed on its own (one GetStats per time bucket per tab); now the process's feed makes
    each distinct read once per refresh, whatever the number of tabs, and stops when no tab is left."""
    async def scenario():
        feed = _feed(world)
        tabs = [_session(world, feed) for _ in range(5)]
        for tab in tabs:
            await tab.start()
        assert feed.subscribers == 5 and feed.polling
        world["listed"].clear()
        world["stats"].clear()
        await _round(feed)
        assert len(world["listed"]) == 1                    # the first history page, once for five tabs
        assert len(world["stats"]) == 2                     # the window's stats and the model's quality, once
        assert all(_ids(t.history.page) == ["p1"] for t in tabs)
        await tabs[0].set_filters(label="x")                # one tab with its own filter: one more read
        world["listed"].clear()
        await _round(feed)
        assert len(world["listed"]) == 2 and sorted(f.get("label", "") for f in world["listed"]) == ["", "x"]
        for tab in tabs:
            tab.close()
        assert feed.subscribers == 0 and not feed.polling and feed.loads == {}
    asyncio.run(scenario())


def test_history_pages_with_page_tokens_and_filters_restart_paging(world):
    from ui.history import PAGE_SIZE

    world["rows"] = [_stored(f"p{i:03d}") for i in range(PAGE_SIZE * 2 + 5)]

    async def scenario():
        s = _session(world)
        h = s.history
        await s.start()
        assert h.page[0].prediction.prediction_id == "p000" and h.has_next
        await h.next_page()
        await h.next_page()
        assert h.page_index == 2 and h.page[0].prediction.prediction_id == f"p{2 * PAGE_SIZE:03d}"
        assert len(h.page) == 5 and not h.has_next
        await h.next_page()                      # no further page: stays
        assert h.page_index == 2
        await h.previous_page()
        assert h.page[0].prediction.prediction_id == f"p{PAGE_SIZE:03d}"
        world["rows"].insert(0, _stored("new"))
        await _round(s.feed)                     # live refresh only on the first page
        assert h.page[0].prediction.prediction_id == f"p{PAGE_SIZE:03d}"
        await s.set_filters(label=" x ", transport="ui", window="15 min")
        assert h.page_index == 0 and h.page[0].prediction.prediction_id == "new"
        f = next(f for f in reversed(world["listed"]) if f.get("label"))   # the history page's call
        assert (f["label"], f["transport"]) == ("x", "ui")
        assert now_utc() - f["start_time"] - timedelta(minutes=15) < timedelta(seconds=60)
    asyncio.run(scenario())


def test_the_charts_come_from_one_get_stats_with_its_series_in_readable_units(world):
    """Before: one ListPredictions per time bucket plus a GetStats over their span, every fifth tick, per tab; now
    one GetStats with bucket_seconds gives every bucket, empty ones included."""
    recent = now_utc() - timedelta(seconds=20)
    world["rows"] = [_stored("g1", recent, "grpc", 4.0), _stored("g2", recent, "grpc", 6.0),
                     _stored("g3", recent - timedelta(seconds=5), "grpc", 5.0),
                     _stored("q1", recent - timedelta(minutes=3), "queue", 9.0)]

    async def scenario():
        s = _session(world)
        await s.start()
        world["listed"].clear()
        world["stats"].clear()
        await s.set_filters(window="15 min")
        assert len(world["listed"]) == 1                          # the history page only
        [call] = [w for w in world["stats"] if w.get("bucket_seconds")]
        assert call["bucket_seconds"] == 60 and len(world["stats"]) == 1
        series = s.history.series
        assert 15 <= len(series["t"]) <= 16                       # every minute of the window, empty ones too
        assert sum(series["rate:grpc"][:-1]) + series["rate:grpc"][-1] > 0
        assert series["t"][1] - series["t"][0] == timedelta(minutes=1)
        minutes = [min(1.0, (now_utc() - (t - timedelta(seconds=30))).total_seconds() / 60) for t in series["t"]]
        assert sum(r * m for r, m in zip(series["rate"], minutes)) == pytest.approx(4, rel=0.05)
        assert {"p50", "p95", "p99"} <= set(series) and any(math.isnan(v) for v in series["p95"])
        await s.set_filters(window="15 min", model="nothing-here")
        world["rows"] = []
        await s.set_filters(window="1 h")
        assert s.history.series == {} and s.history.stats is not None  # loaded, and empty: the view says so
    asyncio.run(scenario())


def test_history_finds_a_prediction_by_its_request_id(world):
    world["rows"] = [_stored("p1"), _stored("p2"), _stored("p3")]

    async def scenario():
        s = _session(world)
        await s.start()
        await s.set_filters(request_id=" p2 ")
        assert _ids(s.history.page) == ["p2"] and world["listed"][-1]["request_id"] == "p2"
        await s.set_filters(request_id="nope")
        assert s.history.page == [] and s.history.page_loaded
    asyncio.run(scenario())


def test_series_columns_rate_over_the_part_of_each_bucket_inside_the_window():
    start = NOW - timedelta(minutes=15)
    lat = LatencySummary(1.0, 2.0, 3.0)
    buckets = tuple(StatsBucket(start.replace(second=0) + timedelta(minutes=i), n, {}, {"grpc": n}, lat, {})
                    for i, n in enumerate([6] + [0] * 14 + [3]))
    stats = Stats(9, {}, {}, {"grpc": 9}, lat, (), buckets, start + timedelta(seconds=30), NOW)
    columns = analytics.series_columns("15 min", stats, NOW)
    assert columns["rate"][0] == pytest.approx(6 / 0.5)        # half of the first bucket is in the window
    assert columns["rate:grpc"][1] == 0 and math.isnan(columns["p50"][1]) and columns["p99"][0] == 3.0
    assert analytics.series_columns("15 min", Stats(0, {}, {}, {}, lat, (), buckets[1:-1]), NOW) == {}


def test_store_refuses_incomplete_rows_and_versions_that_do_not_serve(world):
    async def scenario():
        s = _session(world)
        await s.start()
        await s.predict.predict({"a": 1.0, "b": None})
        assert s.predict.notice.kind == "error" and "Fill in b" in s.predict.notice.text
        await s.predict.predict({"a": 1.0, "b": 2.0}, version="1")
        assert "Version 1 of iris is not serving" in s.predict.notice.text
        assert world["sent"] == []
        await s.predict.predict({"a": 1.0, "b": 2.0}, version="2")
        assert s.predict.prediction.prediction_id == "p-new" and world["sent"] == [{"a": 1.0, "b": 2.0}]
    asyncio.run(scenario())


def test_store_admin_messages_and_the_token_stays_out_of_logs(world, caplog):
    caplog.set_level(logging.DEBUG)

    async def scenario():
        s = _session(world)
        m = s.model
        await s.start()
        await m.reload()
        assert "Reload refused by the server: type the admin token first" in m.notice.text
        assert "needs the admin or read-only token" in m.versions_note
        await m.set_token("wrong-token-7f3a")
        assert m.versions == [] and "token was refused" in m.versions_note
        await m.reload("1")
        assert "admin token was not accepted" in m.notice.text
        await m.set_token("right")
        assert [v.version for v in m.versions] == ["2"]
        await m.reload("1")
        assert m.notice.kind == "error"
        assert "Reload to 1 refused by the server; 2 still serves" in m.notice.text
        assert "golden rows do not reproduce" in m.notice.text
        assert all(c.closed for c in FakeClient.instances if c.admin_token)  # admin channels are per call
    asyncio.run(scenario())
    assert "wrong-token-7f3a" not in caplog.text and "Bearer" not in caplog.text


def test_the_model_view_reads_the_fleet_and_its_canaries_with_the_token(world):
    from predmesh.types import DesiredState
    from ui.views import _fleet_table

    async def scenario():
        s = _session(world)
        m = s.model
        await s.start()
        await m.set_token("readonly")
        assert m.desired is None  # no database on this server: nothing said of a fleet
        world["desired"] = DesiredState("iris", "2", False, "2", candidate="3", candidate_share=0.25,
                                        updated_by="ops")
        await m.load_desired()
        assert m.desired is not None and m.desired.candidate == "3"
        assert "canary 3 takes 25% of the calls" in _fleet_table(m.desired)
        await m.set_token("")
        assert m.desired is None
    asyncio.run(scenario())


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


def test_dashboard_builds_and_follows_the_session(world):
    import panel as pn

    from ui import views

    async def scenario():
        s = _session(world)
        page = views.dashboard(s, "predmesh")
        await s.start()
        await s.predict.predict({"a": 1.0, "b": 2.0})
        return s, page
    s, page = asyncio.run(scenario())
    shown = [m.object for m in page.select(pn.pane.Markdown)]
    assert s.predict.prediction.label == "x"
    assert any("Predicted label: x" in str(o) for o in shown)              # the result pane follows the state
    assert any("Connected · server fake:1" in rendered_text(m) for m in page.select(pn.pane.Markdown))
    assert any("page 1 · 1 rows · live" in str(o) for o in shown)          # the history pane follows its state
    table = page.select(pn.widgets.Tabulator)[0]
    assert list(table.value["prediction id"]) == ["p1"]


def test_widgets_drive_the_state_filters_and_the_model_choice(world):
    import panel as pn

    from ui import views

    world["more_models"] = [_info(name="wine", features=("alcohol",))]

    def widget(page, kind, label):
        return next(w for w in page.select(kind) if w.label == label)

    async def scenario():
        s = _session(world)
        page = views.dashboard(s, "predmesh")
        await s.start()
        await s.predict.predict({"a": 1.0, "b": 2.0})
        world["listed"].clear()
        widget(page, pn.widgets.TextInput, "Label").value = " x "     # a history filter typed by the user
        await _settle()
        assert s.history.label == " x " and world["listed"][0]["label"] == "x"
        models = widget(page, pn.widgets.Select, "Model")            # the header's model choice
        assert list(models.options) == ["iris", "wine"] and models.value == "iris"
        world["stats"].clear()
        models.value = "wine"
        await _settle()
        assert s.store.model == "wine" and s.store.info.name == "wine" and s.predict.prediction is None
        assert {"model": "wine"} in world["stats"]                    # its quality was loaded
        form = widget(page, pn.widgets.FloatInput, "alcohol")          # the form follows the schema
        assert form.value == 4.0
    asyncio.run(scenario())


def test_paging_buttons_follow_the_page(world):
    import panel as pn

    from ui import views
    from ui.history import PAGE_SIZE

    world["rows"] = [_stored(f"p{i:03d}") for i in range(PAGE_SIZE + 3)]

    async def scenario():
        s = _session(world)
        page = views.dashboard(s, "predmesh")
        newer, older = (next(b for b in page.select(pn.widgets.Button) if b.label == label)
                        for label in ("◀ Newer", "Older ▶"))
        await s.start()
        assert newer.disabled and not older.disabled
        await s.history.next_page()
        assert not newer.disabled and older.disabled
        assert len(page.select(pn.widgets.Tabulator)[0].value) == 3
    asyncio.run(scenario())


# -- outside strings are text -------------------------------------------------------------------------------------
HOSTILE = ("<img src=x onerror=\"window.__pwned=1\"> | *b* _i_ [x](javascript:alert(1)) `c` $m$ &amp; "
           "<script>window.__pwned=2</script>")
LIVE = {"img", "script", "em", "iframe", "svg", "object", "embed", "math", "del", "input", "style", "link"}


class _Markup(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, list]] = []
        self.data: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, attrs))

    def handle_data(self, data):
        self.data.append(data)


def _markup(pane) -> _Markup:
    """What the browser puts into the page for a Markdown or Alert pane (Panel renders it on the server)."""
    parsed = _Markup()
    parsed.feed(html.unescape(pane._transform_object(pane.object)["object"]))
    return parsed


def rendered_text(pane) -> str:
    return "".join(_markup(pane).data)


def _live(pane) -> list[object]:
    """Elements or attributes in a pane's HTML that do more than show text."""
    found: list[object] = []
    for tag, attrs in _markup(pane).tags:
        if tag in LIVE:
            found.append(tag)
        found += [(tag, name, value) for name, value in attrs
                  if name.startswith("on") or (name in ("href", "src") and not (value or "").startswith("#"))]
    return found


def test_every_outside_string_shows_as_text_in_every_pane(world):
    """Hostile strings in every field the server hands over (model card, versions, history, stats, quality,
    batch runs, error messages) render as their literal text: no element, handler, link, emphasis or cell."""
    import panel as pn

    from ui import views

    h = HOSTILE
    info = ModelInfo(h, h, (FeatureSpec(h, 0.0, 10.0, 4.0, 1.0, ()),), (h, "y"), h * 2,
                     {h: 0.9, "holdout_accuracy": 0.9}, NOW, h, h, True, ())
    p = Prediction(h, h, h, h, h, {h: 0.8, "y": 0.2}, 1.5)
    world.update(info=info, rows=[StoredPrediction(p, {h: 1.0}, "ui", now_utc(), h)], refusal=h,
                 quality=[VersionQuality(h, h, 3, 0.5, 0.5, 0.5)],
                 runs=[BatchRun(h, "nightly", "", h, h, 10, 0, 0.5, 1.0, h, h, NOW, NOW, 1, h, NOW)])

    async def scenario():
        s = _session(world)
        page = views.dashboard(s, "predmesh")
        await s.start()
        await s.predict.predict({h: 1.0})
        await s.model.set_token("right")
        await s.model.reload("1")
        return page
    page = asyncio.run(scenario())
    panes = page.select(pn.pane.Markdown)   # Alert is a Markdown pane too
    assert not {id(p): _live(p) for p in panes if _live(p)}
    shown = [rendered_text(p) for p in panes]
    for what in ("Predicted label", "serving version", "| estimator", "holdout accuracy", "macro precision",
                 "rejected", "Reason:", "predictions of all models"):
        pane_text = next((t for t in shown if what.strip("| ") in t), None)
        assert pane_text is not None and h in pane_text, (what, pane_text)


def test_the_typed_token_leaves_the_page_and_stays_in_the_session(world):
    """Any script in the page could read an input's value: the token is cleared from the widget (and so from the
    browser) as soon as it is entered or used, and the session keeps using it until "Forget token"."""
    import panel as pn

    from ui import views

    async def scenario():
        s = _session(world)
        page = views.dashboard(s, "predmesh")
        await s.start()
        token = page.select(pn.widgets.PasswordInput)[0]
        button = {b.label: b for b in page.select(pn.widgets.Button)}
        token.param.update(value_input="right", value="right")           # typed, then Enter
        await _settle()
        assert (token.value, token.value_input) == ("", "") and s.store.has_token
        assert [v.version for v in s.model.versions] == ["2"]          # the session still uses it
        button["Reload"].clicks += 1
        await _settle()
        assert FakeClient.instances[-1].admin_token == "right"          # used, though no longer in the page
        assert "golden rows do not reproduce" in s.model.notice.text
        token.value_input = "typed-not-entered"                         # typed, then Reload without Enter
        button["Reload"].clicks += 1
        await _settle()
        assert token.value_input == "" and FakeClient.instances[-1].admin_token == "typed-not-entered"
        button["Forget token"].clicks += 1
        await _settle()
        assert not s.store.has_token and "needs the admin or read-only token" in s.model.versions_note
    asyncio.run(scenario())


# -- login --------------------------------------------------------------------------------------------------------
def test_login_gate_slows_each_address_and_caps_all_addresses_together():
    from ui import login

    now = [1000.0]
    gate = login.LoginGate(clock=lambda: now[0])
    for _ in range(login.FREE_FAILURES):
        assert gate.wait_s("a") == 0
        gate.failed("a")
    assert gate.wait_s("a") == 1.0 and gate.wait_s("b") == 0     # per address
    gate.failed("a")
    assert gate.wait_s("a") == 2.0
    for _ in range(20):
        gate.failed("a")
    assert gate.wait_s("a") == login.MAX_DELAY_S                  # doubling stops at the cap
    gate.succeeded("a")
    assert gate.wait_s("a") == 0
    now[0] += login.GLOBAL_WINDOW_S
    for i in range(login.GLOBAL_FAILURES):                         # many addresses, one failure each
        gate.failed(f"10.0.0.{i}")
    assert gate.wait_s("fresh") == pytest.approx(login.GLOBAL_WINDOW_S)
    now[0] += login.GLOBAL_WINDOW_S / 2
    assert gate.wait_s("fresh") == pytest.approx(login.GLOBAL_WINDOW_S / 2)
    now[0] += login.GLOBAL_WINDOW_S / 2
    assert gate.wait_s("fresh") == 0 and gate.wait_s("10.0.0.1") == 0
    now[0] += login.FORGET_AFTER_S
    gate.failed("b")
    assert set(gate._by_address) == {"b"}                          # old records are forgotten


@pytest.mark.parametrize("origin", ["https://dash.example.org", "dash.example.org:https", "dash.example.org/app",
                                    ":5006"])
def test_an_origin_bokeh_cannot_take_is_refused_naming_where_it_came_from(origin):
    """An origin written as a browser writes it (scheme://host, as PREDMESH_GATEWAY_CORS_ORIGINS takes) reached
    Bokeh as it was, and `predmesh ui` died in a 47-line traceback ("Invalid port in host value")."""
    with pytest.raises(ConfigError, match=f"^PREDMESH_UI_ALLOWED_ORIGINS: '{re.escape(origin)}' is not host"):
        UiSettings.from_env({"PREDMESH_UI_ALLOWED_ORIGINS": f"localhost:5006, {origin}"})
    with pytest.raises(ConfigError, match=r"^--allow-websocket-origin: "):
        UiSettings.from_env({}, origins=[origin])
    from bokeh.server.util import create_hosts_allowlist

    for good in ("dash.example.org", "dash.example.org:443", "*", "*.example.org", "10.0.0.*:5006"):
        assert UiSettings.from_env({"PREDMESH_UI_ALLOWED_ORIGINS": good}).websocket_origins == [good]
        create_hosts_allowlist([good], 5006)  # what is let through, Bokeh takes


def test_a_malformed_addr_flag_is_named_as_the_flag():
    """`predmesh ui --addr nope` blamed PREDMESH_UI_ADDR, which the operator had not set."""
    with pytest.raises(ConfigError, match=r"^--addr='nope' must be host:port"):
        UiSettings.from_env({"PREDMESH_UI_ADDR": "127.0.0.1:5006"}, addr="nope")
    with pytest.raises(ConfigError, match=r"^PREDMESH_UI_ADDR='nope' must be host:port"):
        UiSettings.from_env({"PREDMESH_UI_ADDR": "nope"})
