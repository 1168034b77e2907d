"""Feature values in the dashboard, without widgets: what each field of the prediction form offers (from the
model's training profile), the row it sends, a random row drawn from the training profile, and how a stored value
reads.

A value the form sends is what the SDK takes: a float (number), a str (category), a bool (boolean) or None
(missing, only where the feature is nullable)."""
from __future__ import annotations

import itertools
import json
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from predmesh.types import FeatureSpec
from ui import analytics
from ui.panes import text

MISSING = "(missing)"       # the label of the choice (and the text) that stands for a missing value
Value = float | str | bool | None


@dataclass(frozen=True)
class Field:
    """One input of the form. `choices` (label -> value) for a category, a boolean or a number the model takes only
    its training values of (a code); empty for any other number (and for a category whose training values are not
    recorded, typed as text)."""

    name: str
    kind: str                               # "number" | "category" | "boolean"
    nullable: bool
    default: Value
    choices: tuple[tuple[str, Value], ...] = ()
    step: float = 0.1
    hint: str = ""                          # Markdown, outside strings already escaped

    @property
    def labels(self) -> dict[str, Value]:
        return dict(self.choices)


def _share(value: float) -> str:
    return f"{100 * value:.0f}%" if value >= 0.01 or value == 0 else "<1%"


def field(spec: FeatureSpec) -> Field:
    """The form field of one feature."""
    kind, nullable, categories, missing_share = spec.kind, spec.nullable, spec.categories, spec.missing_share
    missing_note = f"; missing in {_share(missing_share)} of training rows" if missing_share > 0 else ""
    if kind == "boolean":
        order = [value for value, _ in categories if value in ("true", "false")] or ["false", "true"]
        choices: list[tuple[str, Value]] = [(v, v == "true") for v in order]
        if nullable:
            choices.append((MISSING, None))
        shares = ", ".join(f"{text(v)} {_share(s)}" for v, s in categories)
        hint = "true or false" + (f" (training: {shares}{missing_note})" if shares else "")
        return Field(spec.name, kind, nullable, choices[0][1], tuple(choices), hint=hint)
    if kind == "category":
        choices = [(value, value) for value, _ in categories]
        if nullable and choices:      # without training values the field is typed text (empty: missing)
            choices.append((MISSING, None))
        shown = ", ".join(f"{text(v)} {_share(s)}" for v, s in categories[:5])
        more = f" and {len(categories) - 5} more" if len(categories) > 5 else ""
        hint = (f"{len(categories)} categories, most common first: {shown}{more}{missing_note}" if categories
                else "a category (its training values are not recorded: type it)")
        if spec.accepts_unknown:
            hint += "; the model also scores categories not seen in training"
        return Field(spec.name, kind, nullable, choices[0][1] if choices else "", tuple(choices), hint=hint)
    if categories:  # a code the model takes only these numbers of: a choice, like a category
        choices = [(value, float(value)) for value, _ in categories]
        if nullable:
            choices.append((MISSING, None))
        shown = ", ".join(f"{text(v)} {_share(s)}" for v, s in categories[:5])
        more = f" and {len(categories) - 5} more" if len(categories) > 5 else ""
        hint = (f"one of the {len(categories)} values the model was fitted on, most common first: "
                f"{shown}{more}{missing_note}")
        return Field(spec.name, "number", nullable, choices[0][1], tuple(choices), hint=hint)
    value = analytics.default_value(spec.min, spec.max, spec.mean, spec.std)
    hint = f"training range {spec.min:g} – {spec.max:g}" + (f", mean {spec.mean:.3g}" if spec.std > 0 else "")
    if nullable:
        hint += f"{missing_note}; leave empty for a missing value"
    return Field(spec.name, "number", nullable, round(value, 4), step=analytics.step(spec.min, spec.max),
                 hint=hint)


def fields(specs: Sequence[FeatureSpec]) -> list[Field]:
    return [field(s) for s in specs]


def schema_key(specs: Sequence[FeatureSpec]) -> tuple:
    """What decides the form's shape: the form is rebuilt only when this changes."""
    return tuple((s.name, s.kind, s.min, s.max, s.mean, s.std, s.categories, s.nullable, s.accepts_unknown)
                 for s in specs)


class Incomplete(ValueError):
    """The form cannot be sent as it is; the message says what to fill in."""


def row(form_fields: Sequence[Field], values: Mapping[str, Any]) -> dict[str, Value]:
    """The features to send for what the form holds, or Incomplete naming the fields to fill in.

    An empty number is missing (None) where the feature is nullable; elsewhere it must be filled in."""
    features: dict[str, Value] = {}
    empty: list[str] = []
    for f in form_fields:
        value = values.get(f.name)
        if f.kind == "number":
            if value is None or (isinstance(value, float) and math.isnan(value)):
                if not f.nullable:
                    empty.append(f.name)
                    continue
                features[f.name] = None
            else:
                features[f.name] = float(value)
        elif f.kind == "boolean":
            features[f.name] = None if value is None else bool(value)
        elif value is None or value == "":
            if not f.nullable:
                empty.append(f.name)
                continue
            features[f.name] = None
        else:
            features[f.name] = str(value)
    if empty:
        raise Incomplete(f"Fill in {', '.join(empty)} before predicting: this model cannot impute "
                         f"{'them' if len(empty) > 1 else 'it'}.")
    return features


def sample(specs: Sequence[FeatureSpec], rng: random.Random) -> dict[str, Value]:
    """A random row drawn from the training profile: a category (or boolean) by its training shares, a missing
    value (where nullable) at its training missing share, a number from its training deciles (uniform inside a
    decile; the normal of its mean and std clipped to its range when deciles are not recorded)."""
    drawn: dict[str, Value] = {}
    for spec in specs:
        kind = spec.kind
        if spec.nullable and rng.random() < spec.missing_share:
            drawn[spec.name] = None
            continue
        if spec.categories:  # a category, a boolean, or a number the model takes only these values of
            values, shares = zip(*spec.categories)
            weights = [max(float(s), 0.0) for s in shares]
            value = rng.choices(values, weights=weights if sum(weights) > 0 else None)[0]
            drawn[spec.name] = (value == "true") if kind == "boolean" else float(value) if kind == "number" \
                else value
        elif kind == "boolean":
            drawn[spec.name] = rng.random() < spec.mean if 0 <= spec.mean <= 1 else rng.random() < 0.5
        elif kind == "category":
            drawn[spec.name] = None if spec.nullable else ""
        else:
            drawn[spec.name] = _number(spec, rng)
    return drawn


def _number(spec: FeatureSpec, rng: random.Random) -> float:
    lo, hi = spec.min, spec.max
    edges = [lo, *spec.quantiles, hi] if spec.quantiles else []
    if len(edges) >= 2 and all(a <= b for a, b in itertools.pairwise(edges)):
        i = rng.randrange(len(edges) - 1)
        value = rng.uniform(edges[i], edges[i + 1])
    elif spec.std > 0:
        value = min(max(rng.gauss(spec.mean, spec.std), lo), hi)
    else:
        value = rng.uniform(lo, hi)
    step = analytics.step(lo, hi)
    return round(value, max(0, -math.floor(math.log10(step)))) if step < 1 else float(round(value))


def plain(value: object) -> str:
    """A stored feature value as plain text that cannot be mistaken for another: a number, true / false, a
    category in double quotes (JSON style, so a category named "missing" or "true" reads as one) and missing."""
    if value is None:
        return "missing"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float | int):
        return f"{value:.10g}"
    return json.dumps(str(value), ensure_ascii=False)


def in_order(features: Mapping[str, object], names: Sequence[str] = ()) -> list[tuple[str, object]]:
    """A stored row's (name, value) pairs in the model's schema order (`names`), any others after them."""
    rank = {name: i for i, name in enumerate(names)}
    return sorted(features.items(), key=lambda item: rank.get(item[0], len(rank)))


def inputs(features: Mapping[str, object], names: Sequence[str] = ()) -> str:
    """A stored row's features on one line of plain text (a table cell), in schema order."""
    return " · ".join(f"{name}={plain(value)}" for name, value in in_order(features, names))
