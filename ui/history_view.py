"""Layout of the History tab: filters, the page of stored predictions, feedback and the window's charts."""
from __future__ import annotations

import pandas as pd
import panel as pn

from ui import analytics, charts, form
from ui.history import PAGE_SIZE
from ui.panes import notice_pane, text
from ui.session import Session

ANY = "(any)"


def _schema(row, info) -> tuple[str, ...]:
    """The feature names of the row's model when it is the selected one (their order), else none."""
    return tuple(info.feature_names) if info is not None and info.name == row.prediction.model else ()


def _frame(rows, info=None) -> pd.DataFrame:
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
        "inputs": form.inputs(r.features, _schema(r, info)),
    } for r in rows], columns=["time (UTC)", "prediction id", "model", "version", "label", "p(label)", "transport",
                               "latency ms", "true label", "inputs"])


def _inputs_table(row, info=None) -> str:
    """The stored inputs of one prediction as a Markdown table; every name and value is shown as text."""
    if row is None:
        return ""
    lines = [f"**Inputs of prediction {text(row.prediction.prediction_id)}**", "", "| feature | value |",
             "|---|---|"]
    lines += [f"| {text(name)} | {text(form.plain(value))} |"
              for name, value in form.in_order(row.features, _schema(row, info))]
    return "\n".join(lines)


def _model_options(models) -> dict[str, str]:
    return {ANY: "", **{m.name: m.name for m in models}}


def _page_label(rows, index: int) -> str:
    live = "live" if index == 0 else "live refresh paused on older pages"
    return f"page {index + 1} · {len(rows)} rows · {live}"


def _caption(stats, info, model: str, window: str) -> str:
    if stats is None:
        return ""
    labels, counts = analytics.class_counts(info.classes if info else (), stats.by_label)
    scope = f"model {text(model)}" if model else "all models"
    span = "all time" if window == "all" else f"the last {window}"
    shares = " · ".join(f"{text(label)}: {n}" for label, n in zip(labels, counts))
    lat = stats.latency
    return (f"{stats.total} predictions of {scope} in {span} — {shares}. "
            f"Latency p50 {lat.p50_ms:.2f} / p95 {lat.p95_ms:.2f} / p99 {lat.p99_ms:.2f} ms.")


def _table_empty(rows, loaded: bool, window: str, request_id: str) -> str:
    """What the History table says when the read answered with no row (never while loading or after a failure)."""
    if not loaded or rows:
        return ""
    span = "at any time" if window == "all" else f"in the last {window}"
    if request_id.strip():
        return f"**No stored prediction has request id {text(request_id.strip())}** {span}."
    return f"**No predictions match these filters {span}.**"


def _charts_empty(stats, series, window: str) -> str:
    if stats is None or series:
        return ""
    span = "at any time" if window == "all" else f"in the last {window}"
    return f"**No predictions {span}**: the charts are empty."


def _transports(stats) -> str:
    if stats is None or not stats.total:
        return ""
    lines = ["| transport | predictions | share |", "|---|---|---|"]
    lines += [f"| {text(t)} | {n} | {100 * n / stats.total:.1f}% |"
              for t, n in sorted(stats.by_transport.items(), key=lambda kv: -kv[1])]
    return "\n".join(lines)


def _choices(select: pn.widgets.Select, options: list[str]) -> None:
    """New options for a select, keeping its value when still offered, else the first option."""
    value = select.value
    select.options = options
    select.value = value if value in options else (options[0] if options else None)


def history_view(session: Session) -> pn.Column:
    store, state = session.store, session.history
    filters = {
        "model": pn.widgets.Select(label="Model", width=150, options=pn.bind(_model_options, store.param.models)),
        "version": pn.widgets.TextInput(label="Version", placeholder="any", width=110),
        "label": pn.widgets.TextInput(label="Label", placeholder="any", width=130),
        "request_id": pn.widgets.TextInput(label="Request id", placeholder="any (exact match)", width=240),
        "transport": pn.widgets.Select(label="Transport", options={ANY: "", **{t: t for t in analytics.TRANSPORTS}},
                                       width=110),
        "window": pn.widgets.Select(label="Time window", options=list(analytics.WINDOWS), value=state.window,
                                    width=110),
    }
    pn.bind(session.set_filters, **filters, watch=True)

    table = pn.widgets.Tabulator(pn.bind(_frame, state.param.page, store.param.info), disabled=True,
                                 show_index=False, selectable=1, sizing_mode="stretch_width",
                                 layout="fit_data_stretch", widths={"inputs": 360},
                                 height=40 + 30 * PAGE_SIZE)  # room for a full page: rows outside are not drawn
    empty = pn.pane.Markdown(pn.bind(_table_empty, state.param.page, state.param.page_loaded, state.param.window,
                                     state.param.request_id), sizing_mode="stretch_width")
    newer = pn.widgets.Button(label="◀ Newer", width=90, disabled=state.param.page_index.rx() == 0)
    older = pn.widgets.Button(label="Older ▶", width=90, disabled=state.param.has_next.rx.not_())

    async def newer_page(_):
        await state.previous_page()

    async def older_page(_):
        await state.next_page()

    newer.on_click(newer_page)
    older.on_click(older_page)
    page_label = pn.pane.Markdown(pn.bind(_page_label, state.param.page, state.param.page_index),
                                  margin=(12, 10, 0, 10))

    pid = pn.widgets.TextInput(label="Prediction id (click a row)", width=300)
    true_label = pn.widgets.Select(label="True label", options=[], width=150)
    send = pn.widgets.Button(label="Submit feedback", color="primary", width=150)

    async def submit(_):
        await state.submit_feedback(pid.value or "", true_label.value or "")

    send.on_click(submit)

    def model_classes(info) -> None:
        classes = list(info.classes) if info else []
        if list(true_label.options) != classes:
            _choices(true_label, classes)

    inputs = pn.pane.Markdown("", sizing_mode="stretch_width")

    def row_clicked(event) -> None:
        if 0 <= event.row < len(state.page):
            row = state.page[event.row]
            pid.value = row.prediction.prediction_id
            inputs.object = _inputs_table(row, store.info)
            classes = list(row.prediction.probabilities)
            if store.info and store.info.name == row.prediction.model:
                classes = list(store.info.classes)
            _choices(true_label, classes)

    model_classes(store.info)
    pn.bind(model_classes, store.param.info, watch=True)
    table.on_click(row_clicked)

    class_fig, class_source = charts.class_chart()
    rate_fig, rate_source = charts.rate_chart()
    lat_fig, lat_sources = charts.latency_chart()

    def draw_classes(stats, info) -> None:
        if stats is not None:
            labels, counts = analytics.class_counts(info.classes if info else (), stats.by_label)
            charts.set_class_counts(class_fig, class_source, labels, counts)

    pn.bind(draw_classes, state.param.stats, store.param.info, watch=True)
    pn.bind(lambda series: charts.set_rates(rate_fig, rate_source, series), state.param.series, watch=True)
    pn.bind(lambda series: charts.set_latencies(lat_fig, lat_sources, series), state.param.series, watch=True)
    drawn = state.param.series.rx.bool()

    feedback = pn.Card(pn.Row(pid, true_label, send), notice_pane(state.param.feedback_notice), inputs,
                       title="Feedback: the true label of a prediction", collapsible=False,
                       sizing_mode="stretch_width")
    caption = pn.pane.Markdown(pn.bind(_caption, state.param.stats, store.param.info, state.param.model,
                                       state.param.window))
    return pn.Column(
        pn.Row(*filters.values()),
        notice_pane(state.param.notice), notice_pane(state.param.page_note),
        empty, table, pn.Row(newer, page_label, older), feedback,
        notice_pane(state.param.stats_note),
        pn.pane.Markdown(pn.bind(_charts_empty, state.param.stats, state.param.series, state.param.window)),
        pn.Row(pn.Column(pn.pane.Bokeh(class_fig, sizing_mode="stretch_width",
                                       visible=state.param.stats.rx.is_not(None)), caption,
                         sizing_mode="stretch_width"),
               pn.Column(pn.pane.Bokeh(rate_fig, sizing_mode="stretch_width", visible=drawn),
                         sizing_mode="stretch_width"),
               sizing_mode="stretch_width"),
        pn.Row(pn.Column(pn.pane.Bokeh(lat_fig, sizing_mode="stretch_width", visible=drawn),
                         sizing_mode="stretch_width"),
               pn.Column(pn.pane.Markdown(pn.bind(_transports, state.param.stats)), sizing_mode="stretch_width"),
               sizing_mode="stretch_width"),
        sizing_mode="stretch_width")
