"""The dashboard in a real browser: Debian's Chromium (Playwright) against `python -m ui` and a real server.

One server (SQLite persistence, so history and quality work) and one dashboard are shared by the module; each test
opens its own page. Screenshots of the main views go to <tmp>/ui-browser*/screenshots.
"""
from __future__ import annotations

import asyncio
import re
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import expect

from predmesh import Client
from tests.conftest import IRIS_ROW
from tests.support.artifacts import failing_smoke_test
from tests.support.match import search
from tests.support.procs import ADMIN_TOKEN, WRITER_TOKEN, ServerProc, wait_for
from tests.support.ui import PROBABILITIES_JS, UiProc, enter, open_dashboard, tab

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]

CLASS_COUNTS_JS = """() => { for (const d of Bokeh.documents) { const m = d.get_model_by_name('class_counts');
    if (m) return Object.fromEntries(m.data.label.map((l, i) => [l, m.data.n[i]])); } return null; }"""
SETOSA = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


@dataclass
class Mesh:
    root: Path
    store: Path
    server: ServerProc
    ui: UiProc
    shots: Path

    def restart_server(self) -> None:
        self.server.close()
        self.server = ServerProc(self.store, self.root / "server.log", grpc_port=self.server.grpc_port).start()

    def client(self) -> Client:
        return Client(self.server.target, timeout=5.0, writer_token=WRITER_TOKEN)


@pytest.fixture(scope="module")
def mesh(trained_store, tmp_path_factory):
    root = tmp_path_factory.mktemp("ui-browser")
    store = root / "models"
    shutil.copytree(trained_store, store)
    failing_smoke_test(store, "iris", "2", "3")   # newest version, refused at reload: golden rows do not reproduce
    shots = root / "screenshots"
    shots.mkdir()
    server = ServerProc(store, root / "server.log").start()
    mesh = Mesh(root, store, server, UiProc(server.target, root / "ui.log", env={"PREDMESH_LOG_LEVEL": "DEBUG"}),
                shots)
    try:
        mesh.ui.start()
        yield mesh
        print(f"\nscreenshots: {shots}")
    finally:
        mesh.ui.stop()
        mesh.server.kill()


@pytest.fixture
def page(browser, mesh, request):
    page = open_dashboard(browser, mesh.ui.url)
    yield page
    page.screenshot(path=mesh.shots / f"end-{request.node.name[:60]}.png", full_page=True)
    expect(page.get_by_text("Traceback")).to_have_count(0)  # never a traceback on the page
    page.close()


def test_predict_from_the_generated_form_shows_in_history_and_class_chart(page, mesh):
    with mesh.client() as client:
        features = [f.name for f in client.get_model("iris").features]
    assert features == list(SETOSA)
    for name in features:                      # the form is generated from GetModel's schema
        expect(page.get_by_label(name, exact=True)).to_be_visible()
    tab(page, "History")                        # tabs render when shown
    wait_for(lambda: page.evaluate(CLASS_COUNTS_JS), 15, what="class chart data")
    before = page.evaluate(CLASS_COUNTS_JS)
    tab(page, "Predict")
    for name, value in SETOSA.items():
        enter(page.get_by_label(name, exact=True), value)
    page.wait_for_timeout(300)
    page.get_by_role("button", name="Predict").click()
    expect(page.get_by_text("Predicted label: setosa")).to_be_visible(timeout=15000)
    answer = page.get_by_text(re.compile(r"prediction id \S+ ·")).inner_text()
    pid = search(r"prediction id (\S+)", answer).group(1)
    assert re.search(r"version \d+", answer)
    # the chart's data reaches the browser in its own message, after or before the text: wait for it
    probabilities = wait_for(lambda: page.evaluate(PROBABILITIES_JS), 10, what="probability chart data")
    assert set(probabilities) == {"setosa", "versicolor", "virginica"} and probabilities["setosa"] > 0.5
    page.screenshot(path=mesh.shots / "predict.png", full_page=True)

    tab(page, "History")
    row = page.locator(".tabulator-row").filter(has_text=pid)
    expect(row).to_be_visible(timeout=15000)
    expect(row).to_contain_text("setosa")
    expect(row).to_contain_text("ui")            # stored with the dashboard's transport
    wait_for(lambda: page.evaluate(CLASS_COUNTS_JS).get("setosa", 0) == before.get("setosa", 0) + 1, 15,
             what="class chart to count the new prediction")
    page.screenshot(path=mesh.shots / "history.png", full_page=True)


def test_feedback_changes_the_accuracy_shown_for_its_version(page, mesh):
    run_key = f"nightly/iris/{uuid.uuid4().hex[:8]}"
    with mesh.client() as client:
        p = client.predict("iris", SETOSA)
        client.record_batch_run(run_key, kind="nightly", model="iris", status="failed",  # attempt 1
                                message="Score failed: server down")
        client.record_batch_run(run_key, kind="nightly", model="iris", status="succeeded", rows=150, rejected=2,
                                accuracy=0.96, model_version=p.model_version, message="scored 150 rows")
    tab(page, "History")
    row = page.locator(".tabulator-row").filter(has_text=p.prediction_id)
    expect(row).to_be_visible(timeout=15000)
    row.locator(".tabulator-cell").filter(has_text=p.prediction_id).click()
    expect(page.get_by_label("Prediction id (click a row)")).to_have_value(p.prediction_id)
    quality = page.locator("table").filter(has_text="macro precision")

    def submit(label: str, verdict: str):
        tab(page, "History")
        page.get_by_label("True label").select_option(label)
        page.get_by_role("button", name="Submit feedback").click()
        expect(page.get_by_text(f"Recorded true label {label} for prediction {p.prediction_id}: "
                                f"the prediction was {verdict}")).to_be_visible(timeout=10000)
        tab(page, "Quality")

    submit("virginica", "wrong")                # setosa predicted: 0 of 1 right for this version
    version_row = quality.locator("tr").filter(has_text=re.compile(rf"^\s*{p.model_version}\b"))
    expect(version_row).to_contain_text("0.0%", timeout=10000)
    wrong_text = version_row.inner_text()
    submit("setosa", "right")                   # the same prediction relabelled: now 1 of 1 right
    expect(version_row).to_contain_text("100.0%", timeout=10000)
    assert version_row.inner_text() != wrong_text
    with mesh.client() as client:
        q = next(q for q in client.get_stats(model="iris").quality if q.model_version == p.model_version)
    assert q.accuracy == 1.0 and q.feedback_count == 1
    expect(version_row).to_contain_text(f"{100 * q.macro_precision:.1f}%")
    run_rows = page.locator("tr").filter(has_text=run_key)    # the batch pipeline's runs (ListBatchRuns)
    expect(run_rows).to_have_count(2)                          # every attempt, newest first
    expect(run_rows.nth(0)).to_contain_text("succeeded")
    expect(run_rows.nth(0)).to_contain_text("96.0%")
    expect(run_rows.nth(1)).to_contain_text("failed")
    expect(run_rows.nth(1)).to_contain_text("Score failed: server down")
    page.screenshot(path=mesh.shots / "quality.png", full_page=True)


def test_reload_refused_without_or_with_a_wrong_token_or_bad_version_then_the_version_changes(page, mesh):
    with mesh.client() as client:
        serving = client.get_model("iris").version
    other = "1" if serving != "1" else "2"
    tab(page, "Model")
    expect(page.get_by_text(f"serving version {serving}")).to_be_visible()
    reload_button = page.get_by_role("button", name="Reload")
    reload_button.click()
    # T22: the dashboard holds no admin credential: the server itself refuses a reload sent without a typed token
    expect(page.get_by_text("Reload refused by the server: type the admin token first")).to_be_visible(timeout=10000)
    expect(page.get_by_text("missing 'authorization: Bearer <token>' metadata")).to_be_visible()

    token = page.get_by_label(re.compile("Admin or read-only token"))
    enter(token, "not-the-token")
    expect(page.get_by_text("The token was refused")).to_be_visible(timeout=10000)
    reload_button.click()
    expect(page.get_by_text("Reload refused by the server: the admin token was not accepted")).to_be_visible(
        timeout=10000)

    enter(token, ADMIN_TOKEN)
    expect(page.get_by_text("3 stored versions of iris")).to_be_visible(timeout=10000)
    page.get_by_label("Reload to").select_option("3")  # golden rows fail: FAILED_PRECONDITION
    reload_button.click()
    expect(page.get_by_text(f"Reload to 3 refused by the server; {serving} still serves")).to_be_visible(
        timeout=30000)
    expect(page.get_by_text(f"serving version {serving}")).to_be_visible()

    page.get_by_label("Reload to").select_option(other)
    reload_button.click()
    expect(page.get_by_text(f"Reloaded iris: version {other} now serves (was {serving})")).to_be_visible(
        timeout=30000)
    expect(page.get_by_text(f"serving version {other}")).to_be_visible(timeout=10000)
    page.screenshot(path=mesh.shots / "model.png", full_page=True)
    tab(page, "Predict")
    expect(page.get_by_label("Model version")).to_contain_text(f"serving ({other})")
    with mesh.client() as client:
        assert client.get_model("iris").version == other


def test_admin_token_is_never_written_to_the_dashboard_log(page, mesh):
    typed = f"wrong-{uuid.uuid4().hex}"
    tab(page, "Model")
    token = page.get_by_label(re.compile("Admin or read-only token"))
    enter(token, typed)
    expect(page.get_by_text("The token was refused")).to_be_visible(timeout=10000)
    page.get_by_role("button", name="Reload").click()
    expect(page.get_by_text("the admin token was not accepted")).to_be_visible(timeout=10000)
    enter(token, ADMIN_TOKEN)
    expect(page.get_by_text("stored versions of iris")).to_be_visible(timeout=10000)
    log = mesh.ui.log()
    assert "reload of model iris" in log and "DEBUG" in log   # the log is live, at its most verbose level
    assert typed not in log and ADMIN_TOKEN not in log


def test_server_down_shows_the_error_keeps_the_data_and_recovers_without_a_page_reload(page, mesh):
    with mesh.client() as client:
        p = client.predict("iris", IRIS_ROW)
    tab(page, "History")
    row = page.locator(".tabulator-row").filter(has_text=p.prediction_id)
    expect(row).to_be_visible(timeout=15000)
    page.evaluate("() => { window.__same_page = 1; }")
    mesh.server.kill()
    expect(page.get_by_text("cannot be reached")).to_be_visible(timeout=20000)
    expect(page.get_by_text("Server unreachable")).to_be_visible()
    expect(row).to_be_visible()                 # what was loaded stays
    page.screenshot(path=mesh.shots / "server-down.png", full_page=True)
    mesh.restart_server()
    expect(page.get_by_text("cannot be reached")).to_be_hidden(timeout=30000)
    expect(page.get_by_text("Connected", exact=False).first).to_be_visible()
    assert page.evaluate("() => window.__same_page") == 1  # recovered in place, no reload of the page
    with mesh.client() as client:
        after = client.predict("iris", IRIS_ROW)
    expect(page.locator(".tabulator-row").filter(has_text=after.prediction_id)).to_be_visible(timeout=15000)


def upgrade(url: str, origin: str) -> int:
    """The HTTP status of a websocket upgrade with this Origin (101: accepted); in a thread, since Playwright's
    sync API keeps an event loop running in this one."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, _upgrade(url, origin)).result(timeout=30)


async def _upgrade(url: str, origin: str) -> int:
    from tornado.httpclient import HTTPClientError, HTTPRequest
    from tornado.websocket import websocket_connect

    try:
        conn = await websocket_connect(HTTPRequest(url, headers={"Origin": origin}))
    except HTTPClientError as exc:
        return exc.code
    conn.close()
    return 101


def test_t22_websocket_upgrade_with_a_disallowed_origin_is_refused(mesh):
    ws = mesh.ui.url.replace("http://", "ws://") + "ws"
    port = mesh.ui.port
    assert upgrade(ws, "http://evil.example") == 403
    assert upgrade(ws, f"http://127.0.0.1.evil.example:{port}") == 403  # CVE-2026-21883 shape
    assert upgrade(ws, f"http://127.0.0.1:{port}") == 101              # the page's own origin
    assert upgrade(ws, f"http://localhost:{port}") == 101


def test_t22_with_a_password_an_unauthenticated_page_load_does_not_show_the_dashboard(browser, mesh):
    password = f"pw-{uuid.uuid4().hex[:8]}"
    with UiProc(mesh.server.target, mesh.root / "ui-login.log", env={"PREDMESH_UI_PASSWORD": password}) as ui:
        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args, **kwargs):
                return None
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.build_opener(NoRedirect).open(ui.url, timeout=10)
        assert refused.value.code == 302 and "/login" in refused.value.headers["Location"], refused.value.headers
        with urllib.request.urlopen(ui.url + "liveness", timeout=10) as live:   # health probes need no login
            assert live.status == 200 and b"true" in live.read()
        ws = ui.url.replace("http://", "ws://") + "ws"
        assert upgrade(ws, f"http://127.0.0.1:{ui.port}") != 101       # no cookie: no session

        page = browser.new_page()
        page.goto(ui.url)
        expect(page.locator("input[name=password]")).to_be_visible(timeout=15000)
        page.locator("input[name=username]").fill("oncall")
        page.locator("input[name=password]").fill("wrong")
        page.get_by_role("button", name="Login").click()
        expect(page.get_by_text("Invalid username or password")).to_be_visible(timeout=10000)
        expect(page.get_by_text("predmesh dashboard")).to_have_count(0)
        page.screenshot(path=mesh.shots / "login.png")
        page.locator("input[name=username]").fill("oncall")
        page.locator("input[name=password]").fill(password)
        page.get_by_role("button", name="Login").click()
        expect(page.get_by_text("Connected", exact=False).first).to_be_visible(timeout=30000)
        page.close()
        assert password not in ui.log()


def _login(url: str, password: str) -> tuple[int, list[str], dict]:
    """POST the login form without following the redirect: (status, Set-Cookie headers, headers)."""
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None
    body = urllib.parse.urlencode({"username": "oncall", "password": password}).encode()
    try:
        with urllib.request.build_opener(NoRedirect).open(url + "login", data=body, timeout=10) as r:
            return r.status, r.headers.get_all("Set-Cookie") or [], dict(r.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get_all("Set-Cookie") or [], dict(exc.headers)


def test_failed_logins_are_refused_after_a_few_and_the_login_cookies_are_samesite_strict(mesh):
    """Before: 100 wrong passwords were all checked in 4.8 s, and the login cookie had no SameSite."""
    from ui.login import FREE_FAILURES

    password = f"pw-{uuid.uuid4().hex[:8]}"
    with UiProc(mesh.server.target, mesh.root / "ui-throttle.log", env={"PREDMESH_UI_PASSWORD": password}) as ui:
        with urllib.request.urlopen(ui.url + "login?next=/", timeout=10) as page:
            cookies = page.headers.get_all("Set-Cookie") or []
        status, login_cookies, _ = _login(ui.url, password)
        assert status == 302
        cookies += login_cookies
        assert {c.split("=", 1)[0] for c in login_cookies} >= {"user", "id_token"}
        for cookie in cookies:
            assert "SameSite=Strict" in cookie and "HttpOnly" in cookie, cookie

        started = time.monotonic()
        statuses = [_login(ui.url, f"guess-{i}")[0] for i in range(100)]
        elapsed = time.monotonic() - started
        checked = statuses.count(302)       # the password was looked at (and found wrong)
        print(f"\n100 wrong passwords in {elapsed:.2f} s: {checked} checked, {statuses.count(429)} refused (429)")
        assert statuses.count(429) + checked == 100
        # three free failures, then 1 s, 2 s, 4 s ... between checks: a few more in this time at most
        assert checked <= FREE_FAILURES + 1 + int(elapsed).bit_length(), statuses
        status, cookies, headers = _login(ui.url, password)     # even the right password waits now
        assert status == 429 and not cookies and int(headers["Retry-After"]) >= 1
        assert password not in ui.log() and "login refused: too many failed logins" in ui.log()


HOSTILE = ("<img src=x onerror=\"window.__pwned=1\">", "<script>window.__pwned=2</script>",
           "a | b *c* _d_ [x](javascript:window.__pwned=3) `e` $f$ &amp;")


def test_hostile_strings_stored_through_the_public_api_show_as_text_in_every_tab(page, mesh):
    """Before: a batch-run key `<img src=x onerror=...>` stored anonymously ran its handler in the operator's
    browser on the Quality tab; Markdown in stored text rendered. Now every stored string is shown literally."""
    tag = uuid.uuid4().hex[:8]
    shown = {i: f"{h} {tag}{i}" for i, h in enumerate(HOSTILE)}
    with mesh.client() as client:
        p = client.predict("iris", SETOSA)
        for h in shown.values():     # run_key: any printable text up to 128 characters; message: free text
            client.record_batch_run(h, kind="nightly", model="iris", status="failed", message=h,
                                    model_version=p.model_version)
    for name in ("Predict", "History", "Model", "Quality"):
        tab(page, name)
        page.wait_for_timeout(500)
    for i in shown:
        expect(page.locator("tr").filter(has_text=f"{tag}{i}")).to_have_count(1, timeout=15000)
    page.wait_for_timeout(500)
    assert page.evaluate("() => typeof window.__pwned") == "undefined"   # no handler or script ran
    assert page.locator("img[src=x]").count() == 0
    for i, h in shown.items():
        cells = page.locator("tr").filter(has_text=f"{tag}{i}").locator("td")
        expect(cells).to_have_count(12)              # `|` does not break the row into more cells
        expect(cells.nth(2)).to_have_text(h)         # the run key, literally
        expect(cells.nth(11)).to_have_text(h)        # its message, literally
    page.screenshot(path=mesh.shots / "hostile-quality.png", full_page=True)
    for name in ("Predict", "History", "Model", "Quality"):   # and once more after a few live refreshes
        tab(page, name)
        page.wait_for_timeout(1500)
    assert page.locator("img[src=x]").count() == 0
    assert page.locator("a[href^='javascript']").count() == 0
    assert page.locator("em").filter(has_text=re.compile("^[cd]$")).count() == 0
    assert page.evaluate("() => typeof window.__pwned") == "undefined"
