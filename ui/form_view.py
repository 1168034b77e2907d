"""The prediction form's widgets, generated from the model's feature schema (ui.form decides what each offers)."""
from __future__ import annotations

import random

import panel as pn

from ui import form

INPUT_WIDTH = 220


class NumberInput(pn.widgets.FloatInput):
    """A FloatInput whose empty value (None: missing) shows as an empty field; Panel's sends NaN to the browser,
    which shows the letters "NaN"."""

    def _process_param_change(self, params):
        empty = [name for name in ("value", "value_throttled") if name in params and params[name] is None]
        props = super()._process_param_change(params)
        props.update({name: None for name in empty if name in props})
        return props


def _widget(f: form.Field) -> pn.widgets.Widget:
    if f.kind == "number" and not f.choices:
        return NumberInput(label=f.name, value=f.default, step=f.step, width=INPUT_WIDTH,
                                     placeholder="empty: missing" if f.nullable else "")
    if f.choices:   # a category's (or code's) training values, most common first, or true / false; (missing)
        return pn.widgets.Select(label=f.name, options=f.labels, value=f.default, width=INPUT_WIDTH)
    return pn.widgets.TextInput(label=f.name, value=f.default or "", width=INPUT_WIDTH,
                                placeholder="empty: missing" if f.nullable else "")


class FeatureForm:
    """Inputs generated from a model's feature schema; rebuilt only when the schema itself changes."""

    def __init__(self, rng: random.Random | None = None):
        self.inputs: dict[str, pn.widgets.Widget] = {}
        self.fields: list[form.Field] = []
        self.panel = pn.Column(sizing_mode="stretch_width")
        self._specs: tuple = ()
        self._schema: tuple | None = None
        self._rng = rng or random.Random()

    def update(self, info) -> None:
        specs = tuple(info.features) if info else ()
        schema = form.schema_key(specs)
        if schema == self._schema:
            return
        self._schema, self._specs = schema, specs
        self.fields = form.fields(specs)
        self.inputs = {}
        rows: list[pn.viewable.Viewable] = []
        for f in self.fields:
            widget = _widget(f)
            self.inputs[f.name] = widget
            rows.append(pn.Row(widget, pn.pane.Markdown(f.hint, margin=(28, 10, 0, 10))))
        self.panel.objects = rows or [pn.pane.Markdown("No model loaded yet.")]

    def values(self) -> dict[str, object]:
        return {name: widget.value for name, widget in self.inputs.items()}

    def fill_random(self) -> None:
        """Fill every input with a row drawn from the training profile (categories by their shares)."""
        for name, value in form.sample(self._specs, self._rng).items():
            widget = self.inputs.get(name)
            if widget is None:
                continue
            if isinstance(widget, pn.widgets.TextInput):
                widget.value = "" if value is None else str(value)
            else:
                widget.value = value
