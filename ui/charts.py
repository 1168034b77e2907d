"""Bokeh figures of the dashboard; each comes with the ColumnDataSource the views update in place."""
from __future__ import annotations

from typing import Any

from bokeh.models import ColumnDataSource, DatetimeTickFormatter, FactorRange, HoverTool, Range1d
from bokeh.models.annotations import Title
from bokeh.plotting import figure
from panel.io import unlocked

from ui.analytics import LATENCIES

BAR = "#4c72b0"


def _base(title: str, height: int, **kwargs):
    fig = figure(title=Title(text=title, text_font_size="11pt"), height=height, sizing_mode="stretch_width",
                 toolbar_location=None, tools="", **kwargs)
    fig.grid.grid_line_alpha = 0.3
    fig.outline_line_color = None
    return fig


def probability_chart() -> tuple:
    """Horizontal bars: probability per class of the last prediction."""
    source = ColumnDataSource({"label": [], "p": []}, name="probabilities")
    fig = _base("Probabilities", 180, y_range=FactorRange(), x_range=(0, 1))
    fig.hbar(y="label", right="p", height=0.7, source=source, color=BAR)
    fig.xaxis.axis_label = "probability"
    fig.add_tools(HoverTool(tooltips=[("class", "@label"), ("probability", "@p{0.000}")]))
    return fig, source


def set_probabilities(fig, source, probabilities: dict[str, float], classes) -> None:
    labels = [c for c in classes if c in probabilities] or sorted(probabilities)
    with unlocked():  # Bokeh models changed from an async callback: dispatch without the document lock
        fig.y_range.factors = list(reversed(labels))
        source.data = {"label": labels, "p": [probabilities[c] for c in labels]}


def class_chart() -> tuple:
    """Vertical bars: predictions per predicted class in the history window."""
    source = ColumnDataSource({"label": [], "n": []}, name="class_counts")
    fig = _base("Predicted classes", 220, x_range=FactorRange())
    fig.vbar(x="label", top="n", width=0.7, source=source, color=BAR)
    fig.y_range.start = 0
    fig.yaxis.axis_label = "predictions"
    fig.xaxis.axis_label = "predicted class"
    fig.add_tools(HoverTool(tooltips=[("class", "@label"), ("predictions", "@n")]))
    return fig, source


def set_class_counts(fig, source, labels: list[str], counts: list[int]) -> None:
    with unlocked():
        fig.x_range.factors = labels
        source.data = {"label": labels, "n": counts}


COLORS = {"all": "#333333", "grpc": "#1f77b4", "rest": "#ff7f0e", "queue": "#2ca02c", "batch": "#9467bd",
          "ui": "#d62728"}
LATENCY_STYLE = {"p50": ("#55a868", "dashed"), "p95": ("#4c72b0", "solid"), "p99": ("#c44e52", "dotted")}


def _time_axis(fig, y_label: str) -> None:
    """Readable axes: clock times (UTC) or dates below, the unit on the left, from zero."""
    fig.xaxis.axis_label = "time (UTC)"
    fig.xaxis.formatter = DatetimeTickFormatter(minutes="%H:%M", hourmin="%H:%M", hours="%H:%M",
                                                days="%b %d", months="%b %Y")
    fig.yaxis.axis_label = y_label
    fig.y_range.start = 0
    fig.legend.location = "top_left"
    fig.legend.orientation = "horizontal"
    fig.legend.label_text_font_size = "8pt"
    fig.legend.background_fill_alpha = 0.5


def rate_chart() -> tuple:
    """Predictions per minute over time: all of them, and one line per transport."""
    source = ColumnDataSource({"xs": [], "ys": [], "series": [], "color": [], "width": []}, name="rates")
    fig = _base("Predictions per minute, all and by transport", 220, x_axis_type="datetime", x_range=Range1d())
    fig.multi_line("xs", "ys", source=source, color="color", line_width="width", legend_field="series")
    fig.add_tools(HoverTool(tooltips=[("", "@series"), ("predictions/min", "$y{0.0}")]))
    _time_axis(fig, "predictions/min")
    return fig, source


def latency_chart() -> tuple:
    """p50, p95 and p99 server latency over time, in ms."""
    source = ColumnDataSource({"xs": [], "ys": [], "series": [], "color": [], "dash": []}, name="latencies")
    points = ColumnDataSource({"t": [], "y": [], "color": []}, name="latency_points")
    fig = _base("Server latency (p50 dashed, p95 solid, p99 dotted)", 220, x_axis_type="datetime",
                x_range=Range1d())
    fig.multi_line("xs", "ys", source=source, color="color", line_width=2, line_dash="dash", legend_field="series")
    fig.scatter("t", "y", source=points, color="color", size=5)  # a bucket alone draws no line: mark its points
    fig.add_tools(HoverTool(tooltips=[("", "@series"), ("ms", "$y{0.00}")]))
    _time_axis(fig, "latency (ms)")
    return fig, (source, points)


def set_rates(fig, source, data: dict[str, list]) -> None:
    """Draw analytics.series_columns (nothing when it is empty: the view shows the empty state)."""
    if not data:
        return
    transports = [k.split(":", 1)[1] for k in data if k.startswith("rate:")]
    lines: dict[str, list[Any]] = {"xs": [], "ys": [], "series": [], "color": [], "width": []}
    for name, column in [("all", "rate"), *((t, f"rate:{t}") for t in transports)]:
        lines["xs"].append(list(data["t"]))
        lines["ys"].append(list(data[column]))
        lines["series"].append(name)
        lines["color"].append(COLORS.get(name, "#8c8c8c"))
        lines["width"].append(2.5 if name == "all" else 1.5)
    with unlocked():  # Bokeh models changed from an async callback: dispatch without the document lock
        source.data = lines
        _span(fig, data["t"])


def set_latencies(fig, sources, data: dict[str, list]) -> None:
    if not data:
        return
    source, points = sources
    lines: dict[str, list[Any]] = {"xs": [], "ys": [], "series": [], "color": [], "dash": []}
    flat: dict[str, list[Any]] = {"t": [], "y": [], "color": []}
    for name in LATENCIES:
        color, dash = LATENCY_STYLE[name]
        lines["xs"].append(list(data["t"]))
        lines["ys"].append(list(data[name]))
        lines["series"].append(name)
        lines["color"].append(color)
        lines["dash"].append(dash)
        for t, y in zip(data["t"], data[name]):
            if y == y:
                flat["t"].append(t)
                flat["y"].append(y)
                flat["color"].append(color)
    with unlocked():
        source.data = lines
        points.data = flat
        _span(fig, data["t"])


def _span(fig, t: list) -> None:
    """Show the whole window (t are bucket middles), even where buckets have no data."""
    if t:
        half = (t[1] - t[0]) / 2 if len(t) > 1 else None
        fig.x_range.update(start=t[0] - half if half else t[0], end=t[-1] + half if half else t[-1])
