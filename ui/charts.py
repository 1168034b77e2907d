"""Bokeh figures of the dashboard; each comes with the ColumnDataSource the views update in place."""
from __future__ import annotations

from typing import Any

from bokeh.models import ColumnDataSource, FactorRange, HoverTool, Range1d
from bokeh.models.annotations import Title
from bokeh.plotting import figure
from panel.io import unlocked

from ui.analytics import TRANSPORTS

COLORS = {"grpc": "#1f77b4", "rest": "#ff7f0e", "queue": "#2ca02c", "batch": "#9467bd", "ui": "#d62728"}
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
    fig.add_tools(HoverTool(tooltips=[("class", "@label"), ("predictions", "@n")]))
    return fig, source


def set_class_counts(fig, source, labels: list[str], counts: list[int]) -> None:
    with unlocked():
        fig.x_range.factors = labels
        source.data = {"label": labels, "n": counts}


def rate_chart() -> tuple:
    """Requests per minute over time, one line per transport seen in the window."""
    source = ColumnDataSource({"xs": [], "ys": [], "transport": [], "color": []}, name="rates")
    fig = _base("Requests per minute by transport", 220, x_axis_type="datetime", x_range=Range1d())
    fig.multi_line("xs", "ys", source=source, color="color", line_width=2, legend_field="transport")
    _legend(fig)
    return fig, source


def latency_chart() -> tuple:
    """p95 (solid) and p50 (dashed) server latency over time, by transport seen in the window."""
    p95 = ColumnDataSource({"xs": [], "ys": [], "transport": [], "color": []}, name="latency_p95")
    p50 = ColumnDataSource({"xs": [], "ys": [], "transport": [], "color": []}, name="latency_p50")
    points = ColumnDataSource({"t": [], "y": [], "color": []}, name="latency_points")
    fig = _base("Latency by transport, ms (p95 solid, p50 dashed)", 220, x_axis_type="datetime",
                x_range=Range1d())
    fig.multi_line("xs", "ys", source=p95, color="color", line_width=2, legend_field="transport")
    fig.multi_line("xs", "ys", source=p50, color="color", line_width=1, line_dash="dashed")
    fig.scatter("t", "y", source=points, color="color", size=5)  # a bucket alone draws no line: mark p95 points
    _legend(fig)
    return fig, (p95, p50, points)


def _legend(fig) -> None:
    fig.y_range.start = 0
    fig.legend.location = "top_left"
    fig.legend.orientation = "horizontal"
    fig.legend.label_text_font_size = "8pt"
    fig.legend.background_fill_alpha = 0.5


def _lines(data: dict[str, list], suffix: str = "") -> dict[str, list]:
    """multi_line columns: one line per transport that has any value in the window (NaN = gap)."""
    lines: dict[str, list[Any]] = {"xs": [], "ys": [], "transport": [], "color": []}
    for transport in TRANSPORTS:
        ys = data.get(transport + suffix, [])
        if any(y == y and y for y in ys):
            lines["xs"].append(list(data["t"]))
            lines["ys"].append(list(ys))
            lines["transport"].append(transport)
            lines["color"].append(COLORS[transport])
    return lines


def set_rates(fig, source, data: dict[str, list]) -> None:
    if not data:
        return
    with unlocked():
        source.data = _lines(data)
        _span(fig, data["t"])


def set_latencies(fig, sources, data: dict[str, list]) -> None:
    if not data:
        return
    p95, p50, points = sources
    lines = _lines(data, "_p95")
    flat: dict[str, list[Any]] = {"t": [], "y": [], "color": []}
    for xs, ys, color in zip(lines["xs"], lines["ys"], lines["color"]):
        for t, y in zip(xs, ys):
            if y == y:
                flat["t"].append(t)
                flat["y"].append(y)
                flat["color"].append(color)
    with unlocked():
        p95.data = lines
        p50.data = _lines(data, "_p50")
        points.data = flat
        _span(fig, data["t"])


def _span(fig, t: list) -> None:
    """Show the whole window (t are bucket middles), even where buckets have no data."""
    if t:
        half = (t[1] - t[0]) / 2 if len(t) > 1 else None
        fig.x_range.update(start=t[0] - half if half else t[0], end=t[-1] + half if half else t[-1])
