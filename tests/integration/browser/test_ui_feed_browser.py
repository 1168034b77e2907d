"""The dashboard as a viewer of shared data, in Debian's Chromium against `python -m ui` and a real server.

Every asset comes from the dashboard itself (no request leaves 127.0.0.1), each view renders within 2 s, open tabs
share one refresh per period at the server (counted from its own metrics) and polling stops once they are closed,
a slow server shows as slow reads (which call, how long, the data kept and marked stale), never as "server down".
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import expect

from predmesh import Client
from tests.conftest import IRIS_ROW
from tests.support.procs import WRITER_TOKEN, ServerProc, wait_for
from tests.support.ui import UiProc, open_dashboard, tab

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

FIRST_RENDER_S = 2.0
READS = ("ListModels", "ListPredictions", "GetStats", "ListBatchRuns")


@dataclass
class Mesh:
    root: Path
    server: ServerProc
    ui: UiProc
    shots: Path

    def client(self) -> Client:
        return Client(self.server.target, timeout=5.0, writer_token=WRITER_TOKEN)

    def handled(self) -> dict[str, float]:
        """Calls the server has answered so far, per read the dashboard makes (its Prometheus counters)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.server.metrics_port}/metrics", timeout=10) as r:
            text = r.read().decode()
        counts = dict.fromkeys(READS, 0.0)
        for line in text.splitlines():
            if line.startswith("grpc_server_handled_total{"):
                method = re.search(r'grpc_method="(\w+)"', line)
                if method and method.group(1) in counts:
                    counts[method.group(1)] += float(line.rsplit(" ", 1)[1])
        return counts


@pytest.fixture(scope="module")
def mesh(trained_store, tmp_path_factory):
    root = tmp_path_factory.mktemp("ui-feed")
    store = root / "models"
    shutil.copytree(trained_store, store)
    shots = root / "screenshots"
    shots.mkdir()
    server = ServerProc(store, root / "server.log").start()
    ui = UiProc(server.target, root / "ui.log", env={"PREDMESH_LOG_LEVEL": "DEBUG"})
    try:
        ui.start()
        with Client(server.target, timeout=5.0) as client:
            for _ in range(3):
                client.predict("iris", IRIS_ROW)
        yield Mesh(root, server, ui, shots)
        print(f"\nscreenshots: {shots}")
    finally:
        ui.stop()
        server.kill()


def _outside(requests: list[str], origin: str) -> list[str]:
    return [u for u in requests if not u.startswith((f"{origin}/", "data:", f"blob:{origin}/"))]


def _open(browser, mesh):
    """A new page on the dashboard, once connected and its first view is drawn."""
    page = open_dashboard(browser, mesh.ui.url)
    expect(page.get_by_label("sepal_length", exact=True)).to_be_visible(timeout=30000)
    return page


VIEWS = {  # what each tab shows once its reads have come
    "Predict": lambda page: page.get_by_label("sepal_length", exact=True),
    "History": lambda page: page.locator(".tabulator-row").first,
    "Model": lambda page: page.get_by_text(re.compile(r"serving version \d+")),
    "Quality": lambda page: page.get_by_text("Last batch pipeline runs"),
}


def test_every_asset_comes_from_the_dashboard_and_each_view_renders_within_2_s(browser, mesh):
    """Before: the Model tab loaded divider.css from cdn.holoviz.org and the login page its logo and icon: offline
    they fail, online they tell a third party who opens the dashboard."""
    origin = mesh.ui.url.rstrip("/")
    requests: list[str] = []
    page = browser.new_page(viewport={"width": 1300, "height": 1000})
    page.on("request", lambda r: requests.append(r.url))
    try:
        started = time.monotonic()
        page.goto(mesh.ui.url)
        expect(VIEWS["Predict"](page)).to_be_visible(timeout=30000)
        timings = {"first page": time.monotonic() - started}
        for name, shown in VIEWS.items():
            started = time.monotonic()
            tab(page, name)
            expect(shown(page)).to_be_visible(timeout=30000)
            timings[name] = time.monotonic() - started
            page.screenshot(path=mesh.shots / f"{name.lower()}.png", full_page=True)
        print("\nfirst render (s):", {k: round(v, 2) for k, v in timings.items()})
        expect(page.locator(".alert-danger:visible")).to_have_count(0)    # no error banner anywhere
        expect(page.get_by_text("Server unreachable")).to_have_count(0)
        # the goal holds on a quiet machine; on a shared one it stretches with the load per core, and says so
        budget = FIRST_RENDER_S * max(1.0, os.getloadavg()[0] / (os.cpu_count() or 1))
        print(f"render budget {budget:.1f} s (load average {os.getloadavg()[0]:.1f})")
        assert all(timings[name] <= budget for name in VIEWS), timings
        assert _outside(requests, origin) == [], _outside(requests, origin)
    finally:
        page.close()

    password = f"pw-{uuid.uuid4().hex[:8]}"
    with UiProc(mesh.server.target, mesh.root / "ui-login.log", env={"PREDMESH_UI_PASSWORD": password}) as ui:
        origin, requests, failed = ui.url.rstrip("/"), [], []
        page = browser.new_page()
        page.on("request", lambda r: requests.append(r.url))
        page.on("response", lambda r: failed.append(r.url) if r.status >= 400 else None)
        try:
            page.goto(ui.url)
            expect(page.locator("input[name=password]")).to_be_visible(timeout=15000)
            page.wait_for_load_state("networkidle")
            assert any("logo_stacked.png" in u for u in requests)          # the logo, from the dashboard itself
            assert failed == [] and _outside(requests, origin) == [], (failed, _outside(requests, origin))
        finally:
            page.close()


def test_open_tabs_share_one_refresh_per_period_and_polling_stops_when_they_close(browser, mesh):
    """Before: every tab refreshed on its own, one GetStats and one ListPredictions per time bucket every fifth
    tick: four tabs made four times the calls. Now the process reads each once per period (1 s here)."""
    pages = [_open(browser, mesh) for _ in range(4)]
    for page in pages:
        tab(page, "History")
    expect(pages[-1].locator(".tabulator-row").first).to_be_visible(timeout=15000)
    before, started = mesh.handled(), time.monotonic()
    time.sleep(10)
    after, elapsed = mesh.handled(), time.monotonic() - started
    calls = {m: after[m] - before[m] for m in READS}
    print(f"\n4 tabs, {elapsed:.1f} s at a 1 s refresh: {calls}")
    periods = elapsed / 1.0
    # once per period for all four tabs (GetStats: the window with its series, and the model's quality)
    assert 0.5 * periods <= calls["ListPredictions"] <= periods + 2, calls
    assert calls["GetStats"] <= 2 * (periods + 2) and calls["ListModels"] <= periods + 2, calls

    stopped = mesh.ui.log().count("feed: no tab open, polling stopped")
    for page in pages:
        page.close()
    # Bokeh ends a session ~10 s after its websocket closed (ui.app.UNUSED_LIFETIME_MS); the last one stops the feed
    wait_for(lambda: mesh.ui.log().count("feed: no tab open, polling stopped") > stopped, 60, interval=0.5,
             what="the closed tabs' sessions to end")
    quiet = mesh.handled()
    time.sleep(3.5)
    assert mesh.handled() == quiet          # nothing is read for closed tabs


def test_a_slow_server_shows_slow_and_stale_reads_not_a_server_down_banner(browser, mesh):
    """Before: a read over its 3 s deadline made the page say the server cannot answer, and the charts and
    quality said "No feedback recorded". Now the read is named, with how long it has taken, and the data stays."""
    page = _open(browser, mesh)
    try:
        tab(page, "History")
        row = page.locator(".tabulator-row").first
        expect(row).to_be_visible(timeout=15000)
        os.kill(mesh.server.started.pid, signal.SIGSTOP)   # connected, but answers nothing: every read is slow
        try:
            expect(page.get_by_text(re.compile(r"ListPredictions has taken \d+\.\d s so far"))).to_be_visible(
                timeout=15000)
            expect(page.get_by_text(re.compile(r"ListPredictions failed after \d+\.\d s: .*DEADLINE_EXCEEDED.*"
                                               r"Stale: showing the data loaded at"))).to_be_visible(timeout=15000)
            expect(row).to_be_visible()                       # what was loaded stays
            expect(page.get_by_text("Server unreachable")).to_have_count(0)
            expect(page.get_by_text("No predictions match")).to_have_count(0)
            page.screenshot(path=mesh.shots / "slow.png", full_page=True)
        finally:
            os.kill(mesh.server.started.pid, signal.SIGCONT)
        expect(page.get_by_text("Stale: showing")).to_have_count(0, timeout=20000)
    finally:
        page.close()


def test_history_finds_a_prediction_by_request_id_and_an_empty_result_says_so(browser, mesh):
    wanted = f"req-{uuid.uuid4().hex[:12]}"
    with mesh.client() as client:
        p = client.predict("iris", IRIS_ROW, request_id=wanted)
        for _ in range(3):
            client.predict("iris", IRIS_ROW)
    page = _open(browser, mesh)
    try:
        tab(page, "History")
        expect(page.locator(".tabulator-row").first).to_be_visible(timeout=15000)
        search = page.get_by_label("Request id", exact=True)
        search.fill(wanted)
        search.press("Enter")
        expect(page.locator(".tabulator-row")).to_have_count(1, timeout=10000)
        expect(page.locator(".tabulator-row").first).to_contain_text(p.prediction_id)
        search.fill(f"no-such-request-{uuid.uuid4().hex[:6]}")
        search.press("Enter")
        expect(page.get_by_text(re.compile(r"No stored prediction has request id no\Wsuch"))).to_be_visible(
            timeout=10000)
        expect(page.locator(".tabulator-row")).to_have_count(0)
        page.screenshot(path=mesh.shots / "empty.png", full_page=True)
        search.fill("")
        search.press("Enter")
        label = page.get_by_label("Label", exact=True)
        label.fill(f"no-such-label-{uuid.uuid4().hex[:6]}")
        label.press("Enter")
        expect(page.get_by_text("No predictions match these filters in the last 1 h")).to_be_visible(timeout=10000)
    finally:
        page.close()


SERIES_JS = """() => { for (const d of Bokeh.documents) { const m = d.get_model_by_name('rates');
    if (m) return {series: m.data.series, points: m.data.ys.map(ys => ys.length)}; } return null; }"""
AXES_JS = """() => { const labels = []; for (const d of Bokeh.documents) for (const m of d.all_models)
    if (m.axis_label) labels.push(m.axis_label); return labels; }"""


def test_charts_show_the_window_from_one_series_with_units_on_the_axes(browser, mesh):
    page = _open(browser, mesh)
    try:
        tab(page, "History")
        wait_for(lambda: page.evaluate(SERIES_JS), 15, what="the rate chart's data")
        data = page.evaluate(SERIES_JS)
        assert data["series"][0] == "all" and "grpc" in data["series"]
        assert set(data["points"]) == {12} or set(data["points"]) == {13}   # 1 h of 5-minute buckets
        labels = page.evaluate(AXES_JS)
        assert {"predictions/min", "latency (ms)", "time (UTC)", "predictions"} <= set(labels), labels
    finally:
        page.close()
