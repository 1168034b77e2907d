"""The typed prediction form without a browser: fields from FeatureSpec, the row sent, random rows, stored values."""
from __future__ import annotations

import asyncio
import random
import re
from collections import Counter
from datetime import UTC, datetime

import pytest

from predmesh.types import FeatureSpec, ModelInfo, Prediction, StoredPrediction
from tests.unit.ui.test_ui import FakeClient, _session, _stored, rendered_text
from ui import form
from ui.store import now_utc

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
CONTRACTS = (("Month-to-month", 0.5), ("One year", 0.3), ("Two year", 0.2))


def spec(name: str, kind: str = "number", *, lo: float = 0.0, hi: float = 72.0, mean: float = 30.0,
         std: float = 20.0, quantiles: tuple[float, ...] = (), categories: tuple[tuple[str, float], ...] = (),
         missing_share: float = 0.0, nullable: bool = False, accepts_unknown: bool = False) -> FeatureSpec:
    return FeatureSpec(name, lo, hi, mean, std, quantiles, kind=kind, categories=categories,
                       missing_share=missing_share, nullable=nullable, accepts_unknown=accepts_unknown)


CHURN = (spec("tenure", nullable=True, missing_share=0.05),
         spec("monthly", lo=20.0, hi=120.0, mean=70.0, std=20.0),
         spec("contract", "category", lo=0.0, hi=0.0, mean=0.0, std=0.0, categories=CONTRACTS, missing_share=0.05,
              nullable=True, accepts_unknown=True),
         spec("senior", "boolean", lo=0.0, hi=1.0, mean=0.2, std=0.0, categories=(("false", 0.8), ("true", 0.2))))


def churn_info(features=CHURN, version: str = "1") -> ModelInfo:
    return ModelInfo("churn", version, tuple(features), ("no", "yes"), "ab" * 32, {}, NOW, "1.9", "Pipeline",
                     True, ())


# -- fields -------------------------------------------------------------------------------------------------------
def test_a_category_is_a_choice_of_its_training_categories_most_common_first_then_missing():
    f = form.field(CHURN[2])
    assert f.kind == "category" and f.default == "Month-to-month"
    assert f.choices == (("Month-to-month", "Month-to-month"), ("One year", "One year"), ("Two year", "Two year"),
                         (form.MISSING, None))
    assert "3 categories, most common first: Month\\-to\\-month 50%" in f.hint
    assert "missing in 5% of training rows" in f.hint and "not seen in training" in f.hint
    strict = form.field(spec("contract", "category", categories=CONTRACTS))
    assert [label for label, _ in strict.choices] == ["Month-to-month", "One year", "Two year"]  # no missing choice
    assert "not seen in training" not in strict.hint
    untold = form.field(spec("region", "category", nullable=True))      # training values not recorded: typed text
    assert untold.choices == () and untold.default == "" and "type it" in untold.hint
    assert form.row([untold], {"region": ""}) == {"region": None} and form.row([untold], {"region": "EU"}) == {
        "region": "EU"}


def test_a_boolean_is_a_true_false_choice_with_missing_where_nullable():
    f = form.field(CHURN[3])
    assert f.choices == (("false", False), ("true", True)) and f.default is False
    assert form.field(spec("senior", "boolean", categories=(("true", 0.7), ("false", 0.3)))).default is True
    nullable = form.field(spec("senior", "boolean", nullable=True, categories=(("false", 0.8), ("true", 0.2))))
    assert nullable.choices[-1] == (form.MISSING, None)
    assert form.field(spec("flag", "boolean")).choices == (("false", False), ("true", True))  # no profile


def test_a_number_is_as_before_and_says_when_it_may_be_left_empty():
    tenure, monthly = form.field(CHURN[0]), form.field(CHURN[1])
    assert (tenure.kind, tenure.default, tenure.choices) == ("number", 30.0, ())
    assert "leave empty for a missing value" in tenure.hint and "leave empty" not in monthly.hint
    old = FeatureSpec("petal_width", 0.1, 2.5, 1.2, 0.76, ())          # an SDK spec of a model before #22
    assert form.field(old).kind == "number" and form.field(old).default == 1.2


def test_a_category_value_is_text_in_the_hint():
    f = form.field(spec("c", "category", categories=(("<img src=x onerror=alert(1)>", 1.0),)))
    assert re.search(r"(?<!\\)<", f.hint) is None and "\\<img src\\=x onerror" in f.hint
    assert f.choices[0] == ("<img src=x onerror=alert(1)>", "<img src=x onerror=alert(1)>")  # an option's text


# -- the row sent -------------------------------------------------------------------------------------------------
def test_the_row_sends_typed_values_and_missing_where_nullable():
    fields = form.fields(CHURN)
    assert form.row(fields, {"tenure": None, "monthly": 70, "contract": None, "senior": True}) == {
        "tenure": None, "monthly": 70.0, "contract": None, "senior": True}
    assert form.row(fields, {"tenure": 3.0, "monthly": 99.5, "contract": "Two year", "senior": False}) == {
        "tenure": 3.0, "monthly": 99.5, "contract": "Two year", "senior": False}


def test_an_empty_number_that_cannot_be_missing_is_a_clear_message():
    with pytest.raises(form.Incomplete, match=r"^Fill in monthly before predicting: this model cannot impute it"):
        form.row(form.fields(CHURN), {"tenure": 1.0, "monthly": None, "contract": "One year", "senior": False})
    strict = form.fields((spec("a"), spec("b", "category", categories=CONTRACTS)))
    with pytest.raises(form.Incomplete, match="Fill in a, b before predicting: this model cannot impute them"):
        form.row(strict, {"a": None, "b": ""})


def test_the_form_widgets_follow_the_typed_schema_and_send_the_typed_row():
    import panel as pn

    from ui.form_view import FeatureForm

    f = FeatureForm(random.Random(1))
    f.update(churn_info())
    assert isinstance(f.inputs["tenure"], pn.widgets.FloatInput)
    contract, senior = f.inputs["contract"], f.inputs["senior"]
    assert isinstance(contract, pn.widgets.Select) and isinstance(senior, pn.widgets.Select)
    assert list(contract.options) == ["Month-to-month", "One year", "Two year", form.MISSING]
    assert contract.value == "Month-to-month" and senior.value is False
    contract.value = None                                  # "(missing)" chosen
    senior.value = True
    f.inputs["tenure"].value = None                        # emptied
    assert form.row(f.fields, f.values()) == {"tenure": None, "monthly": 70.0, "contract": None, "senior": True}
    assert f.inputs["tenure"]._process_param_change({"value": None}) == {"value": None}   # empty, not "NaN"
    same = f.inputs["contract"]
    f.update(churn_info(version="2"))                      # same schema: what was chosen stays
    assert f.inputs["contract"] is same and same.value is None
    f.update(churn_info(features=(*CHURN[:3], spec("senior", "boolean", nullable=True))))  # new schema: rebuilt
    assert list(_select(f, "senior").options) == ["false", "true", form.MISSING]


def test_the_predict_state_sends_the_typed_row_and_refuses_an_empty_required_number():
    world = {"down": False, "info": churn_info(), "rows": [], "sent": []}
    FakeClient.instances = []

    async def scenario():
        s = _session(world)
        await s.start()
        await s.predict.predict({"tenure": None, "monthly": None, "contract": "One year", "senior": True})
        assert s.predict.notice.kind == "error" and "Fill in monthly" in s.predict.notice.text
        assert world["sent"] == []
        await s.predict.predict({"tenure": None, "monthly": 80.0, "contract": None, "senior": True})
        assert world["sent"] == [{"tenure": None, "monthly": 80.0, "contract": None, "senior": True}]
        assert s.predict.notice.kind == "success"
    asyncio.run(scenario())


# -- random rows --------------------------------------------------------------------------------------------------
def test_a_random_row_draws_categories_from_their_shares_and_missing_at_its_share():
    rng = random.Random(7)
    rows = [form.sample(CHURN, rng) for _ in range(4000)]
    contracts = Counter(r["contract"] for r in rows)
    n = len(rows)
    assert contracts[None] / n == pytest.approx(0.05, abs=0.015)
    for value, share in CONTRACTS:                     # shares of the rows that have a value
        assert contracts[value] / (n - contracts[None]) == pytest.approx(share, abs=0.03)
    assert set(contracts) == {None, *dict(CONTRACTS)}
    seniors = Counter(r["senior"] for r in rows)
    assert set(seniors) == {True, False} and seniors[True] / n == pytest.approx(0.2, abs=0.03)
    assert sum(r["tenure"] is None for r in rows) / n == pytest.approx(0.05, abs=0.015)
    assert all(isinstance(m := r["monthly"], float) and 20.0 <= m <= 120.0 for r in rows)   # not nullable
    assert form.row(form.fields(CHURN), rows[0]) == rows[0]                             # a row the form sends


def test_a_random_number_comes_from_its_deciles_when_recorded():
    edges = (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0)
    s = spec("x", lo=0.0, hi=10.0, quantiles=edges)
    values = [float(str(form.sample((s,), random.Random(i))["x"])) for i in range(2000)]
    per_decile = Counter(min(int(v), 9) for v in values)
    assert all(150 <= per_decile[d] <= 250 for d in range(10)), per_decile


def _select(f, name: str):
    import panel as pn

    widget = f.inputs[name]
    assert isinstance(widget, pn.widgets.Select)
    return widget


def test_the_random_row_button_fills_the_form():
    from ui.form_view import FeatureForm

    f = FeatureForm(random.Random(3))
    f.update(churn_info())
    seen = set()
    for _ in range(50):
        f.fill_random()
        seen.add(f.inputs["contract"].value)
        assert f.inputs["contract"].value in _select(f, "contract").options.values()
    assert seen == {"Month-to-month", "One year", "Two year", None}


# -- stored values ------------------------------------------------------------------------------------------------
def test_stored_values_read_as_plain_text_that_cannot_be_confused():
    assert [form.plain(v) for v in (1.5, 12.0, True, False, None, "missing", "true", "x\"y")] == [
        "1.5", "12", "true", "false", "missing", '"missing"', '"true"', '"x\\"y"']
    assert form.inputs({"tenure": None, "contract": "One year", "senior": True}) == (
        'tenure=missing · contract="One year" · senior=true')
    assert form.inputs({"senior": True, "other": 1.0, "contract": "One year", "tenure": None},   # schema order
                       ("tenure", "monthly", "contract", "senior")) == (
        'tenure=missing · contract="One year" · senior=true · other=1')


def test_stored_typed_values_show_as_text_in_the_history_table_and_the_inputs_pane():
    import panel as pn

    from tests.unit.ui.test_ui import HOSTILE, _live
    from ui import history_view

    hostile = _stored("p-typed")
    row = StoredPrediction(hostile.prediction, {"tenure": None, "contract": HOSTILE, "senior": True,
                                                "monthly": 70.25}, "grpc", NOW, "")
    frame = history_view._frame([row])
    assert frame["inputs"][0] == f"tenure=missing · contract={form.plain(HOSTILE)} · senior=true · monthly=70.25"
    assert form.plain(HOSTILE).startswith('"<img src=x onerror=\\"window.__pwned=1\\">')
    pane = pn.pane.Markdown(history_view._inputs_table(row))
    assert not _live(pane)
    shown = rendered_text(pane)
    assert form.plain(HOSTILE) in shown and "missing" in shown and "70.25" in shown and "true" in shown


def test_clicking_a_history_row_shows_its_inputs():
    import panel as pn

    from ui import views

    world = {"down": False, "info": churn_info(), "sent": [],
             "rows": [StoredPrediction(Prediction("p-1", "r", "churn", "1", "no", {"no": 0.7, "yes": 0.3}, 1.0),
                                       {"contract": "Two year", "senior": False,
                                                                   "monthly": 55.0, "tenure": None}, "ui",
                                              now_utc(), "")]}
    FakeClient.instances = []

    async def scenario():
        s = _session(world)
        page = views.dashboard(s, "predmesh")
        await s.start()
        table = page.select(pn.widgets.Tabulator)[0]
        assert list(table.value["inputs"]) == ['tenure=missing · monthly=55 · contract="Two year" · senior=false']
        table._process_event(_click(0))     # what a click on the first row sends from the browser
        return page
    page = asyncio.run(scenario())
    shown = [rendered_text(m) for m in page.select(pn.pane.Markdown)]
    pane = next(t for t in shown if "Inputs of prediction p-1" in t)
    assert [line for line in pane.split("\n") if line.strip()] == [
        "Inputs of prediction p-1", "feature", "value", "tenure", "missing", "monthly", "55", "contract",
        '"Two year"', "senior", "false"]                         # schema order, not the stored order


def _click(row: int):
    from panel.models.tabulator import CellClickEvent

    return CellClickEvent(model=None, column="prediction id", row=row)


def test_a_code_is_a_choice_of_the_numbers_the_model_takes():
    """A number the model takes only its training values of (categories on a number: an encoded plan code) is a
    choice of those numbers: the training mean (2.6) in a number field would be refused by the server."""
    import panel as pn

    from ui.form_view import FeatureForm

    code = spec("plan code", lo=1.0, hi=7.0, mean=2.6, categories=(("1", 0.5), ("7", 0.3), ("2", 0.2)),
                nullable=True, missing_share=0.1)
    field = form.field(code)
    assert field.choices == (("1", 1.0), ("7", 7.0), ("2", 2.0), (form.MISSING, None)) and field.default == 1.0
    assert "values the model was fitted on" in field.hint
    f = FeatureForm(random.Random(1))
    f.update(churn_info(features=(*CHURN, code)))
    assert isinstance(f.inputs["plan code"], pn.widgets.Select) and f.inputs["plan code"].value == 1.0
    f.inputs["plan code"].value = 7.0
    assert form.row(f.fields, f.values())["plan code"] == 7.0
    drawn = Counter(form.sample((code,), random.Random(i))["plan code"] for i in range(2000))
    assert set(drawn) == {1.0, 7.0, 2.0, None} and drawn[1.0] / 2000 == pytest.approx(0.45, abs=0.04)
