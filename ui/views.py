"""Layout of the dashboard: widgets and panes bound to a Store. Views never call the server themselves."""
from __future__ import annotations

import html
from typing import Literal

import pandas as pd
import panel as pn

from ui import analytics, charts
from ui.store import PAGE_SIZE, Notice, Store

ALERT: dict[str, Literal["light", "success", "warning", "danger"]] = {
    "info": "light", "success": "success", "warning": "warning", "error": "danger"}
ANY = "(any)"


def notice_pane(store: Store, name: str) -> pn.pane.Alert:
    """An alert that shows the store's Notice `name` and hides while it is empty."""
    pane = pn.pane.Alert("", visible=False, margin=(5, 10))

    def show(*_):
        notice: Notice = getattr(store, name)
        pane.object = html.escape(notice.text or "", quote=False)  # server messages are text, not markup
        pane.alert_type = ALERT.get(notice.kind, "light")
        pane.visible = bool(notice.text)
    store.param.watch(show, [name])
    show()
    return pane


def _fmt(value: float) -> str:
    return f"{value:.3f}" if value == value else "–"


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


# -- header -------------------------------------------------------------------------------------------------------
def header(store: Store, title: str) -> pn.Column:
    model_select = pn.widgets.Select(label="Model", options=[], width=220, margin=(5, 10))
    status = pn.pane.Markdown("", margin=(18, 10, 0, 10))
    banner = pn.pane.Alert("", alert_type="danger", visible=False, margin=(5, 10))

    def sync_models(*_):
        names = [m.name for m in store.models]
        if list(model_select.options) != names:
            model_select.options = names
        if store.model and model_select.value != store.model:
            model_select.value = store.model

    def sync_status(*_):
        banner.object, banner.visible = html.escape(store.problem, quote=False), bool(store.problem)
        when = store.updated_at.strftime("%H:%M:%S UTC") if store.updated_at else "not yet"
        state = "**Server not answering**" if store.problem else "Connected"
        status.object = f"{state} · server `{store.target}` · updated {when}"

    async def choose(event):
        if event.new:
            await store.select_model(event.new)

    store.param.watch(sync_models, ["models", "model"])
    store.param.watch(sync_status, ["problem", "updated_at"])
    model_select.param.watch(choose, "value")
    sync_models()
    sync_status()
    return pn.Column(pn.Row(pn.pane.Markdown(f"## {title} dashboard", margin=(5, 10)), model_select, status),
                     banner, sizing_mode="stretch_width")


# -- predict ------------------------------------------------------------------------------------------------------
class FeatureForm:
    """Inputs generated from a model's feature schema; rebuilt only when the schema itself changes."""

    def __init__(self):
        self.inputs: dict[str, pn.widgets.FloatInput] = {}
        self.panel = pn.Column(sizing_mode="stretch_width")
        self._schema: tuple = ()

    def update(self, info) -> None:
        schema = tuple((f.name, f.min, f.max, f.mean, f.std) for f in info.features) if info else ()
        if schema == self._schema:
            return
        self._schema = schema
        self.inputs = {}
        rows: list[pn.viewable.Viewable] = []
        for f in (info.features if info else ()):
            value = analytics.default_value(f.min, f.max, f.mean, f.std)
            widget = pn.widgets.FloatInput(label=f.name, value=round(value, 4), step=analytics.step(f.min, f.max),
                                           width=220)
            hint = f"training range {f.min:g} – {f.max:g}" + (f", mean {f.mean:.3g}" if f.std > 0 else "")
            self.inputs[f.name] = widget
            rows.append(pn.Row(widget, pn.pane.Markdown(hint, margin=(28, 10, 0, 10))))
        self.panel.objects = rows or [pn.pane.Markdown("No model loaded yet.")]

    def values(self) -> dict[str, float | None]:
        return {name: widget.value for name, widget in self.inputs.items()}


def predict_view(store: Store) -> pn.Column:
    form = FeatureForm()
    version = pn.widgets.Select(label="Model version", options=["serving"], value="serving", width=220)
    button = pn.widgets.Button(label="Predict", color="primary", width=120)
    result = pn.pane.Markdown("", sizing_mode="stretch_width")
    fig, source = charts.probability_chart()
    chart = pn.pane.Bokeh(fig, sizing_mode="stretch_width", visible=False)

    def sync_info(*_):
        form.update(store.info)
        serving = store.info.version if store.info else ""
        others = [v.version for v in store.versions if v.version != serving]
        options = {f"serving ({serving})" if serving else "serving": "", **{v: v for v in others}}
        if version.options != options:
            version.options = options
            version.value = ""

    def sync_prediction(*_):
        p = store.prediction
        chart.visible = p is not None
        if p is None:
            result.object = ""
            return
        result.object = (f"### Predicted label: {p.label}\n\nmodel **{p.model}** version **{p.model_version}** · "
                         f"prediction id `{p.prediction_id}` · {p.latency_ms:.2f} ms on the server")
        charts.set_probabilities(fig, source, p.probabilities, store.info.classes if store.info else ())

    async def submit(_):
        button.loading = True
        try:
            await store.predict(form.values(), version.value or "")
        finally:
            button.loading = False

    store.param.watch(sync_info, ["info", "versions"])
    store.param.watch(sync_prediction, ["prediction"])
    button.on_click(submit)
    sync_info()
    return pn.Column(
        pn.pane.Markdown("Fill in the features (defaults: the training mean) and predict. The form follows the "
                         "selected model's schema."),
        version, form.panel, button, notice_pane(store, "predict_notice"), result, chart,
        sizing_mode="stretch_width")


# -- history ------------------------------------------------------------------------------------------------------
def _history_frame(rows) -> pd.DataFrame:
    return pd.DataFrame([{
        "time (UTC)": r.created_at.strftime("%Y-%m-%d %H:%M:%S") if r.created_at else "",
        "prediction id": r.prediction.prediction_id,
        "model": r.prediction.model,
        "version": r.prediction.model_version,
        "label": r.prediction.label,
        "p(label)": round(r.prediction.probabilities.get(r.prediction.label, 0.0), 3),
        "transport": r.transport,
        "latency ms": round(r.prediction.latency_ms, 3),
        "true label": r.feedback_label,
    } for r in rows], columns=["time (UTC)", "prediction id", "model", "version", "label", "p(label)", "transport",
                               "latency ms", "true label"])


def _choices(select: pn.widgets.Select, options: list[str]) -> None:
    """New options for a select, keeping its value when still offered, else the first option."""
    value = select.value
    select.options = options
    select.value = value if value in options else (options[0] if options else None)


def history_view(store: Store) -> pn.Column:
    f_model = pn.widgets.Select(label="Model", options={ANY: ""}, width=150)
    f_version = pn.widgets.TextInput(label="Version", placeholder="any", width=110)
    f_label = pn.widgets.TextInput(label="Label", placeholder="any", width=130)
    f_transport = pn.widgets.Select(label="Transport", options={ANY: "", **{t: t for t in analytics.TRANSPORTS}},
                                    width=110)
    f_window = pn.widgets.Select(label="Time window", options=list(analytics.WINDOWS), value=store.window, width=110)
    table = pn.widgets.Tabulator(_history_frame([]), disabled=True, show_index=False, selectable=1,
                                 sizing_mode="stretch_width", layout="fit_data_stretch",
                                 height=40 + 30 * PAGE_SIZE)  # room for a full page: rows outside are not drawn
    newer = pn.widgets.Button(label="◀ Newer", width=90)
    older = pn.widgets.Button(label="Older ▶", width=90)
    page_label = pn.pane.Markdown("", margin=(12, 10, 0, 10))

    pid = pn.widgets.TextInput(label="Prediction id (click a row)", width=300)
    true_label = pn.widgets.Select(label="True label", options=[], width=150)
    send = pn.widgets.Button(label="Submit feedback", color="primary", width=150)

    class_fig, class_source = charts.class_chart()
    class_caption = pn.pane.Markdown("")
    rate_fig, rate_source = charts.rate_chart()
    lat_fig, lat_source = charts.latency_chart()
    lat_table = pn.pane.Markdown("")

    def sync_models(*_):
        options = {ANY: "", **{m.name: m.name for m in store.models}}
        if f_model.options != options:
            f_model.options = options
        classes = list(store.info.classes) if store.info else []
        if list(true_label.options) != classes:
            _choices(true_label, classes)

    def sync_page(*_):
        table.value = _history_frame(store.page)
        newer.disabled = store.page_index == 0
        older.disabled = not store.has_next
        live = "live" if store.page_index == 0 else "live refresh paused on older pages"
        page_label.object = f"page {store.page_index + 1} · {len(store.page)} rows · {live}"

    def sync_stats(*_):
        stats = store.stats
        if stats is None:
            return
        labels, counts = analytics.class_counts(store.info.classes if store.info else (), stats.by_label)
        charts.set_class_counts(class_fig, class_source, labels, counts)
        scope = f"model {store.h_model}" if store.h_model else "all models"
        window = "all time" if store.window == "all" else f"the last {store.window}"
        shares = " · ".join(f"{label}: {n}" for label, n in zip(labels, counts))
        lat = stats.latency
        class_caption.object = (f"{stats.total} predictions of {scope} in {window} — {shares}. "
                                f"Latency p50 {lat.p50_ms:.2f} / p95 {lat.p95_ms:.2f} / p99 {lat.p99_ms:.2f} ms.")

    def sync_series(*_):
        charts.set_rates(rate_fig, rate_source, store.rates)
        charts.set_latencies(lat_fig, lat_source, store.latencies)
        if store.latency_rows:
            lines = ["| transport | sampled | p50 ms | p95 ms | p99 ms |", "|---|---|---|---|---|"]
            lines += [f"| {r['transport']} | {r['sampled']} | {_fmt(r['p50_ms'])} | {_fmt(r['p95_ms'])} | "
                      f"{_fmt(r['p99_ms'])} |" for r in store.latency_rows]
            lat_table.object = "\n".join(lines)
        else:
            lat_table.object = "No predictions in this window."

    async def filters_changed(_):
        await store.set_filters(h_model=f_model.value or "", h_version=(f_version.value or "").strip(),
                                h_label=(f_label.value or "").strip(), h_transport=f_transport.value or "",
                                window=f_window.value)

    def row_clicked(event):
        if 0 <= event.row < len(store.page):
            row = store.page[event.row]
            pid.value = row.prediction.prediction_id
            classes = list(row.prediction.probabilities)
            if store.info and store.info.name == row.prediction.model:
                classes = list(store.info.classes)
            _choices(true_label, classes)

    async def newer_page(_):
        await store.previous_page()

    async def older_page(_):
        await store.next_page()

    async def submit(_):
        await store.submit_feedback(pid.value or "", true_label.value or "")

    store.param.watch(sync_models, ["models", "info"])
    store.param.watch(sync_page, ["page", "page_index", "has_next"])
    store.param.watch(sync_stats, ["stats", "window", "h_model"])
    store.param.watch(sync_series, ["rates", "latencies", "latency_rows"])
    for widget in (f_model, f_version, f_label, f_transport, f_window):
        widget.param.watch(filters_changed, "value")
    table.on_click(row_clicked)
    newer.on_click(newer_page)
    older.on_click(older_page)
    send.on_click(submit)
    sync_models()
    sync_page()

    feedback = pn.Card(pn.Row(pid, true_label, send), notice_pane(store, "feedback_notice"),
                       title="Feedback: the true label of a prediction", collapsible=False,
                       sizing_mode="stretch_width")
    return pn.Column(
        pn.Row(f_model, f_version, f_label, f_transport, f_window),
        notice_pane(store, "history_notice"),
        table, pn.Row(newer, page_label, older), feedback,
        pn.Row(pn.Column(pn.pane.Bokeh(class_fig, sizing_mode="stretch_width"), class_caption,
                         sizing_mode="stretch_width"),
               pn.Column(pn.pane.Bokeh(rate_fig, sizing_mode="stretch_width"), sizing_mode="stretch_width"),
               sizing_mode="stretch_width"),
        pn.Row(pn.Column(pn.pane.Bokeh(lat_fig, sizing_mode="stretch_width"), sizing_mode="stretch_width"),
               pn.Column(pn.pane.Markdown("**Latency by transport** (from the stored predictions sampled per "
                                          "time bucket)"), lat_table, sizing_mode="stretch_width"),
               sizing_mode="stretch_width"),
        sizing_mode="stretch_width")


# -- model card and reload ----------------------------------------------------------------------------------------
def _card(info) -> str:
    if info is None:
        return "No model loaded."
    created = info.created_at.strftime("%Y-%m-%d %H:%M:%S UTC") if info.created_at else "unknown"
    lines = [f"### {info.name} · serving version {info.version}", "",
             "| | |", "|---|---|",
             f"| estimator | {info.estimator} (scikit-learn {info.sklearn_version}) |",
             f"| created at | {created} |",
             f"| sha256 | `{info.sha256}` |",
             f"| features | {', '.join(info.feature_names)} |",
             f"| classes | {', '.join(info.classes)} |"]
    lines += [f"| {name} | {value:.4f} |" for name, value in sorted(info.metrics.items())]
    return "\n".join(lines)


def _versions_table(versions) -> str:
    if not versions:
        return ""
    lines = ["| version | serving | estimator | created at (UTC) | holdout accuracy | sha256 |",
             "|---|---|---|---|---|---|"]
    for v in versions:
        created = v.created_at.strftime("%Y-%m-%d %H:%M:%S") if v.created_at else ""
        acc = v.metrics.get("holdout_accuracy")
        lines.append(f"| {v.version} | {'yes' if v.serving else ''} | {v.estimator} | {created} | "
                     f"{'' if acc is None else f'{acc:.3f}'} | `{v.sha256[:12]}` |")
    return "\n".join(lines)


def model_view(store: Store) -> pn.Column:
    card = pn.pane.Markdown("", sizing_mode="stretch_width")
    token = pn.widgets.PasswordInput(label="Admin or read-only token (kept in this browser session only)",
                                     placeholder="paste the token, then press Enter", width=380)
    versions_note = pn.pane.Markdown("")
    versions = pn.pane.Markdown("", sizing_mode="stretch_width")
    target = pn.widgets.Select(label="Reload to", options={"newest version": ""}, width=200)
    reload_button = pn.widgets.Button(label="Reload", color="warning", width=120)

    def sync(*_):
        card.object = _card(store.info)
        versions_note.object = html.escape(store.versions_note, quote=False)
        versions.object = _versions_table(store.versions)
        options = {"newest version": "", **{v.version: v.version for v in store.versions}}
        if target.options != options:
            target.options = options

    async def token_changed(event):
        await store.set_token(event.new or "")

    async def do_reload(_):
        typed = token.value_input if token.value_input is not None else token.value  # maybe not yet entered
        await store.set_token(typed or "")
        reload_button.loading = True
        try:
            await store.reload(target.value or "")
        finally:
            reload_button.loading = False

    store.param.watch(sync, ["info", "versions", "versions_note"])
    token.param.watch(token_changed, "value")
    reload_button.on_click(do_reload)
    sync()
    return pn.Column(card, pn.layout.Divider(), token, versions_note, versions,
                     pn.Row(target, reload_button), notice_pane(store, "admin_notice"),
                     sizing_mode="stretch_width")


# -- quality ------------------------------------------------------------------------------------------------------
def _quality_table(store: Store) -> str:
    if not store.quality:
        return f"No feedback recorded for {store.model or 'this model'} yet."
    serving = store.info.version if store.info else ""
    lines = ["| version | feedback | accuracy | macro precision | macro recall |", "|---|---|---|---|---|"]
    for q in store.quality:
        mark = " (serving)" if q.model_version == serving else ""
        lines.append(f"| {q.model_version}{mark} | {q.feedback_count} | {_pct(q.accuracy)} | "
                     f"{_pct(q.macro_precision)} | {_pct(q.macro_recall)} |")
    return "\n".join(lines)


def _batch_table(store: Store) -> str:
    if store.batch_note:
        return html.escape(store.batch_note, quote=False)
    if not store.batch_runs:
        return f"No batch run recorded for {store.model or 'this model'}."
    lines = ["| started (UTC) | run | status | version | rows | rejected | accuracy | seconds | message |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in store.batch_runs:
        started = r.started_at.strftime("%Y-%m-%d %H:%M:%S") if r.started_at else ""
        accuracy = "" if r.accuracy is None else _pct(r.accuracy)
        message = html.escape(r.message.replace("|", "/").replace("\n", " ")[:120], quote=False)
        lines.append(f"| {started} | {r.run_key} | {r.status} | {r.model_version} | {r.rows} | {r.rejected} | "
                     f"{accuracy} | {r.duration_seconds:.1f} | {message} |")
    return "\n".join(lines)


def quality_view(store: Store) -> pn.Column:
    table = pn.pane.Markdown("", sizing_mode="stretch_width")
    runs = pn.pane.Markdown("", sizing_mode="stretch_width")

    def sync(*_):
        table.object = _quality_table(store)

    def sync_runs(*_):
        runs.object = _batch_table(store)

    store.param.watch(sync, ["quality", "info", "model"])
    store.param.watch(sync_runs, ["batch_runs", "batch_note", "model"])
    sync()
    sync_runs()
    return pn.Column(
        pn.pane.Markdown("Quality per model version from every recorded true label (the dashboard's feedback, "
                         "the API's and the batch pipeline's). Submit feedback from the History tab."),
        table, pn.pane.Markdown("#### Last batch pipeline runs"), runs, sizing_mode="stretch_width")


def dashboard(store: Store, title: str) -> pn.Column:
    tabs = pn.Tabs(("Predict", predict_view(store)), ("History", history_view(store)),
                   ("Model", model_view(store)), ("Quality", quality_view(store)), dynamic=True,
                   sizing_mode="stretch_width")
    return pn.Column(header(store, title), tabs, sizing_mode="stretch_width", max_width=1400)
