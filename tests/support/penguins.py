"""The Palmer penguins data the `palmerpenguins` package ships (344 rows: four measurements and the year as
numbers, island and sex as categories, 2 rows missing every measurement and 11 missing sex; species, three string
classes), and a HistGradientBoosting pipeline with native categorical support fitted on it by hand, as a data
scientist would in a notebook."""
from __future__ import annotations

import importlib.resources
from pathlib import Path

import numpy as np
import pandas as pd

TARGET = "species"
CATEGORIES = ("island", "sex")
NUMBERS = ("bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g", "year")
FEATURES = ("island", "bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g", "sex", "year")


def csv_path() -> Path:
    """The CSV inside the installed package."""
    return Path(str(importlib.resources.files("palmerpenguins") / "data" / "penguins.csv"))


def table() -> pd.DataFrame:
    """The rows as pandas reads the CSV (numbers float64/int64, categories str, NaN where missing)."""
    return pd.read_csv(csv_path())


def hgb_pipeline(seed: int = 0):
    """An unfitted Pipeline: the categories ordinal-encoded (unseen → missing) ahead of a HistGradientBoosting
    classifier that treats them as native categorical features; the numbers passed through (it handles NaN)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OrdinalEncoder

    columns = ColumnTransformer([
        ("categories", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=np.nan), list(CATEGORIES)),
        ("numbers", "passthrough", list(NUMBERS)),
    ])
    clf = HistGradientBoostingClassifier(categorical_features=[0, 1], max_iter=60, random_state=seed)
    return Pipeline([("columns", columns), ("classifier", clf)])


def fitted_hgb(seed: int = 0):
    """hgb_pipeline() fitted on every row."""
    df = table()
    return hgb_pipeline(seed).fit(df[list(FEATURES)], df[TARGET])


def plain_rows(df: pd.DataFrame, features) -> list[list[object]]:
    """The rows as a client sends them (what the server holds after validation): float for a number, str for a
    category, None where missing; in the order of `features` (manifest Feature objects)."""
    out = []
    for record in df[[f.name for f in features]].itertuples(index=False):
        row: list[object] = []
        for f, value in zip(features, record):
            if pd.isna(value):
                row.append(None)
            elif f.kind == "number":
                row.append(float(value))
            elif f.kind == "boolean":
                row.append(bool(value))
            else:
                row.append(str(value))
        out.append(row)
    return out
