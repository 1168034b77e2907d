"""The dashboard's typed form in a real browser: Debian's Chromium (Playwright) against `python -m ui` and a real
server serving the typed fixture (tests/support/typed_model.py: a number with gaps, a number, a category with gaps
that accepts unseen values, a nullable boolean).

Scored through the form, the probabilities shown (and those the chart holds) are the pipeline's own
`predict_proba` over `inference.models.frame.to_frame`; the stored row read back through the SDK has the very
values typed and the same probabilities to 1e-9."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from inference.models.manifest import Manifest
from predmesh import Client
from tests.support.match import search
from tests.support.procs import WRITER_TOKEN, ServerProc, wait_for
from tests.support.typed_model import CONTRACTS, write_typed_model
from tests.support.ui import PROBABILITIES_JS, UiProc, enter, open_dashboard, tab

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]

MODEL = "churn"
HOSTILE = "<img src=x onerror=\"window.__pwned=1\"> *b* | <script>window.__pwned=2</script>"
DIGITS = 6          # decimals the Predict tab shows (ui.views.PROBABILITY_DIGITS)


@dataclass
class Typed:
    root: Path
    server: ServerProc
    ui: UiProc
    manifest: Manifest
    pipeline: Any
    shots: Path

    def client(self) -> Client:
        return Client(self.server.target, timeout=5.0, writer_token=WRITER_TOKEN)

    def expected(self, row: dict) -> dict[str, float]:
        """The fitted pipeline's own probabilities for one row, in process."""
        from inference.models.frame import to_frame

        features = self.manifest.features
        frame = to_frame([[row[f.name] for f in features]], features)
        return dict(zip(self.manifest.classes, (float(p) for p in self.pipeline.predict_proba(frame)[0])))


@pytest.fixture(scope="module")
def typed(tmp_path_factory):
    root = tmp_path_factory.mktemp("ui-typed")
    store = root / "models"
    manifest, pipeline = write_typed_model(store, MODEL)
    shots = root / "screenshots"
    shots.mkdir()
    server = ServerProc(store, root / "server.log").start()
    ui = UiProc(server.target, root / "ui.log")
    try:
        ui.start()
        yield Typed(root, server, ui, manifest, pipeline, shots)
        print(f"\nscreenshots: {shots}")
    finally:
        ui.stop()
        server.kill()


@pytest.fixture
def page(browser, typed, request):
    page = open_dashboard(browser, typed.ui.url)
    expect(page.get_by_label("contract", exact=True)).to_be_visible(timeout=15000)
    yield page
    page.screenshot(path=typed.shots / f"end-{request.node.name[:60]}.png", full_page=True)
    expect(page.get_by_text("Traceback")).to_have_count(0)
    page.close()


def options(page, label: str) -> list[str]:
    return [o.strip() for o in page.get_by_label(label, exact=True).locator("option").all_inner_texts()]


def shown_probabilities(page) -> dict[str, float]:
    line = page.get_by_text(re.compile(r"^probabilities: ")).inner_text()
    return {label: float(value) for label, value in re.findall(r"(\S+) (\d\.\d+)", line.split(":", 1)[1])}


def score(page) -> str:
    """Click Predict and wait for this answer; its prediction id."""
    before = page.get_by_text(re.compile(r"prediction id \S+ ·"))
    old = before.inner_text() if before.count() else ""
    page.get_by_role("button", name="Predict").click()
    wait_for(lambda: before.count() and before.inner_text() != old, 15, what="a new prediction on the page")
    return search(r"prediction id (\S+)", before.inner_text()).group(1)


def stored(typed: Typed, prediction_id: str):
    with typed.client() as client:
        return wait_for(lambda: next((r for r in client.list_predictions(model=MODEL, page_size=50).items
                                      if r.prediction.prediction_id == prediction_id), None), 15,
                        what=f"prediction {prediction_id} stored")


def test_the_form_offers_training_categories_and_scores_typed_values_as_the_pipeline_does(page, typed):
    categories = [value for value, _ in next(f for f in typed.manifest.features if f.name == "contract").categories]
    assert sorted(categories) == sorted(CONTRACTS)
    assert options(page, "contract") == [*categories, "(missing)"]      # training values, most common first
    senior = next(f for f in typed.manifest.features if f.name == "senior")
    assert options(page, "senior") == [senior.categories[0][0], senior.categories[1][0], "(missing)"]
    expect(page.get_by_text("leave empty for a missing value")).to_have_count(1)   # tenure only

    # a category, a boolean and a missing number; then a missing category and a missing boolean
    cases: list[tuple[dict[str, float | str | bool | None], str, str]] = [
        ({"tenure": None, "monthly": 85.5, "contract": "Two year", "senior": True}, "Two year", "true"),
        ({"tenure": 3.0, "monthly": 42.25, "contract": None, "senior": None}, "(missing)", "(missing)"),
    ]
    for row, contract, senior_label in cases:
        enter(page.get_by_label("tenure", exact=True), "" if row["tenure"] is None else row["tenure"])
        enter(page.get_by_label("monthly", exact=True), row["monthly"])
        page.get_by_label("contract", exact=True).select_option(label=contract)
        page.get_by_label("senior", exact=True).select_option(label=senior_label)
        page.wait_for_timeout(300)
        if row["tenure"] is None:                # an empty field, not the letters NaN
            expect(page.get_by_label("tenure", exact=True)).to_have_value("")
        pid = score(page)
        expected = typed.expected(row)
        label = max(expected, key=lambda c: expected[c])
        expect(page.get_by_text(f"Predicted label: {label}")).to_be_visible()
        shown = shown_probabilities(page)
        assert set(shown) == set(expected)
        for c, p in expected.items():           # the page shows them to DIGITS decimals
            assert shown[c] == pytest.approx(p, abs=0.5 * 10 ** -DIGITS + 1e-12), (c, shown, expected)

        def chart_is(expected=expected):        # the chart holds the doubles the server sent; its data reaches
            chart = page.evaluate(PROBABILITIES_JS) or {}  # the browser in a message of its own, so wait for it
            return set(chart) == set(expected) and all(
                math.isclose(chart[c], p, rel_tol=0, abs_tol=1e-9) for c, p in expected.items())

        wait_for(chart_is, 10, what=f"probability chart to show {expected}")
        record = stored(typed, pid)              # the stored row, through the SDK
        assert record.features == row and record.transport == "ui"
        assert all(math.isclose(record.prediction.probabilities[c], p, rel_tol=0, abs_tol=1e-9)
                   for c, p in expected.items()), (record.prediction.probabilities, expected)
        page.screenshot(path=typed.shots / f"predict-{contract}.png", full_page=True)


def test_an_empty_number_the_model_cannot_impute_is_a_clear_message(page, typed):
    enter(page.get_by_label("monthly", exact=True), "")
    page.wait_for_timeout(300)
    page.get_by_role("button", name="Predict").click()
    expect(page.get_by_text("Fill in monthly before predicting: this model cannot impute it")).to_be_visible(
        timeout=10000)


def test_a_random_row_from_the_training_profile_scores(page, typed):
    page.get_by_role("button", name="Random row").click()
    page.wait_for_timeout(500)
    pid = score(page)
    record = stored(typed, pid)
    row = record.features
    assert set(row) == {"tenure", "monthly", "contract", "senior"}
    assert row["contract"] in (*CONTRACTS, None) and row["senior"] in (True, False, None)
    expected = typed.expected(row)
    assert all(math.isclose(record.prediction.probabilities[c], p, rel_tol=0, abs_tol=1e-9)
               for c, p in expected.items())


def test_a_hostile_category_stored_through_the_api_shows_as_text(page, typed):
    """An unseen category is scored (the pipeline ignores unknowns) and stored as sent: the History table and the
    inputs of the clicked row show it literally; no element of it comes alive."""
    with typed.client() as client:
        p = client.predict(MODEL, {"tenure": 7, "monthly": 60.0, "contract": HOSTILE, "senior": False})
    tab(page, "History")
    row = page.locator(".tabulator-row").filter(has_text=p.prediction_id)
    expect(row).to_be_visible(timeout=15000)
    expect(row).to_contain_text('contract="<img src=x onerror=\\"window.__pwned=1\\"> *b* | <script>')
    row.locator(".tabulator-cell").filter(has_text=p.prediction_id).click()
    inputs = page.locator("table").filter(has_text="feature")
    expect(inputs).to_contain_text(HOSTILE.replace('"', '\\"'), timeout=10000)
    expect(inputs.locator("tr").filter(has_text="tenure")).to_contain_text("7")
    expect(inputs.locator("tr").filter(has_text="senior")).to_contain_text("false")
    page.wait_for_timeout(1500)                  # a few live refreshes of the table
    assert page.locator("img[src=x]").count() == 0
    assert page.evaluate("() => typeof window.__pwned") == "undefined"
    assert page.locator("em").filter(has_text=re.compile("^b$")).count() == 0
    page.screenshot(path=typed.shots / "hostile-history.png", full_page=True)
