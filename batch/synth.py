"""Synthetic rows with known labels for a nightly run, drawn from the model's class-conditional training
distribution (ModelInfo.class_profiles: per class its share and per-feature mean and std) for the numbers, and
from the training profile (FeatureSpec.categories and missing_share) for categories, booleans and gaps; seeded
by the day and model so a rerun produces the same bytes."""
from __future__ import annotations

import hashlib
from datetime import date

import numpy as np

from predmesh.types import FeatureSpec, ModelInfo

TRUE_LABEL = "true_label"


class NoTrainingDistribution(Exception):
    """The model's metadata carries no class profiles (a version trained before they were recorded)."""


def seed_for(day: date, model: str) -> int:
    return int.from_bytes(hashlib.sha256(f"predmesh-nightly/{model}/{day.isoformat()}".encode()).digest()[:8], "big")


def synthesize(info: ModelInfo, day: date, rows: int) -> tuple[list[str], list[list]]:
    """(header, rows): the model's features in schema order, then the true label. Each row's class is drawn by
    the training shares, its features from that class's normal distribution per feature, clipped to the
    training range (the server refuses values implausibly far outside it) and rounded to 4 decimals."""
    profiles = info.class_profiles
    if not profiles:
        raise NoTrainingDistribution(
            f"model {info.name} version {info.version} has no class profiles in its metadata (trained before they "
            "were recorded); train a new version with `predmesh train`")
    rng = np.random.default_rng(seed_for(day, info.name))
    shares = np.array([max(p.share, 0.0) for p in profiles], dtype=float)
    shares = shares / shares.sum() if shares.sum() > 0 else np.full(len(profiles), 1 / len(profiles))
    classes = rng.choice(len(profiles), size=rows, p=shares)
    means = np.array([p.mean for p in profiles], dtype=float)  # classes x features
    stds = np.array([p.std for p in profiles], dtype=float)
    values: np.ndarray = rng.normal(means[classes], stds[classes])
    lows = np.array([f.min for f in info.features])
    highs = np.array([f.max for f in info.features])
    values = np.round(np.clip(values, lows, highs), 4)
    labels = [profiles[c].label for c in classes.tolist()]
    header = [*info.feature_names, TRUE_LABEL]
    if all(f.kind == "number" and not f.nullable and not f.categories for f in info.features):
        return header, [[*row, label] for row, label in zip(values.tolist(), labels)]
    columns = [_typed_column(f, values[:, j], rng) for j, f in enumerate(info.features)]
    return header, [[*row, label] for row, label in zip(zip(*columns), labels)]


def _typed_column(feature: FeatureSpec, numbers: np.ndarray, rng: np.random.Generator) -> list:
    """A feature's cells as the batch input rules read them: a number, a category drawn by its training shares
    (not by class: the profiles carry no per-class shares), true/false for a boolean; an empty cell (None) for a
    missing value, in the training's missing share, where the model accepts one. A number with categories is a
    code the model takes only those values of: drawn by their shares, like a category."""
    cells: list
    if feature.kind == "number" and not feature.categories:
        cells = numbers.tolist()
    else:
        names = [value for value, _ in feature.categories]
        if not names:
            raise NoTrainingDistribution(f"feature {feature.name!r} ({feature.kind}) has no training categories in "
                                         "the model's metadata")
        shares = np.array([max(share, 0.0) for _, share in feature.categories], dtype=float)
        shares = shares / shares.sum() if shares.sum() > 0 else np.full(len(names), 1 / len(names))
        cells = [names[i] for i in rng.choice(len(names), size=len(numbers), p=shares).tolist()]
        if feature.kind == "number":
            cells = [float(c) for c in cells]
    if feature.nullable and feature.missing_share > 0:
        for i in np.flatnonzero(rng.random(len(numbers)) < feature.missing_share).tolist():
            cells[i] = None
    return cells
