"""A small typed model for tests of the typed-feature paths: a churn-like classifier over a number with gaps
(tenure), a number (monthly), a category with gaps (contract) and a boolean (senior), fitted as a scikit-learn
pipeline on a DataFrame and stored as a "frame" version. (Training from a user's file is inference/models/tabular;
this fixture only needs a known pipeline to compare probabilities against.)"""
from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

FEATURES = ("tenure", "monthly", "contract", "senior")
CONTRACTS = ("Month-to-month", "One year", "Two year")


def table(n: int = 400, seed: int = 0) -> pd.DataFrame:
    """The training table: features and the churn label ("yes"/"no")."""
    rng = np.random.default_rng(seed)
    contract = rng.choice(CONTRACTS, n, p=[0.5, 0.3, 0.2]).astype(object)
    contract[rng.random(n) < 0.05] = None
    tenure = rng.integers(0, 72, n).astype(float)
    tenure[rng.random(n) < 0.05] = np.nan
    monthly = rng.normal(70, 20, n).round(2)
    senior = rng.random(n) < 0.2
    risk = (np.nan_to_num(tenure, nan=30) < 12) * 1.5 + (contract == "Month-to-month") * 1.0 + senior * 0.5
    churn = np.where(risk + rng.normal(0, 0.7, n) > 1.2, "yes", "no")
    return pd.DataFrame({"tenure": tenure, "monthly": monthly, "contract": pd.array(contract, dtype="str"),
                         "senior": senior.astype(object), "churn": churn})


def pipeline():
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    pre = ColumnTransformer([
        ("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), ["tenure", "monthly", "senior"]),
        ("cat", make_pipeline(SimpleImputer(strategy="most_frequent"), OneHotEncoder(handle_unknown="ignore")),
         ["contract"]),
    ])
    return Pipeline([("pre", pre), ("clf", LogisticRegression(max_iter=1000))])


def write_typed_model(store_root: Path, model: str = "churn", seed: int = 0):
    """Fit the pipeline on table() and store it as a new version of `model`; returns (manifest, fitted pipeline).
    tenure, contract and senior are nullable (monthly, never missing in training, is not); contract accepts
    unknown categories."""
    import sklearn

    from inference.models.frame import to_frame
    from inference.models.loader import dump_estimator
    from inference.models.manifest import Feature, Manifest
    from inference.models.store import ModelStore

    df = table(seed=seed)
    x, y = df[list(FEATURES)], df["churn"]
    clf = pipeline().fit(x, y)
    features = []
    for name in FEATURES:
        col = df[name]
        missing = float(col.isna().mean())
        if name == "contract":
            shares = col.dropna().value_counts(normalize=True)
            features.append(Feature(name, 0.0, 0.0, kind="category", missing_share=missing, nullable=True,
                                    accepts_unknown=True,
                                    categories=tuple((str(v), float(s)) for v, s in shares.items())))
        elif name == "senior":
            share = float(col.astype(float).mean())
            features.append(Feature(name, 0.0, 1.0, share, 0.0, kind="boolean", nullable=True,
                                    categories=(("false", 1 - share), ("true", share))))
        else:
            v = col.dropna().to_numpy(float)
            features.append(Feature(name, float(v.min()), float(v.max()), float(v.mean()), float(v.std()),
                                    missing_share=missing, nullable=bool(missing)))
    golden_rows = [[None if pd.isna(v) else (bool(v) if name == "senior" else v) for name, v in zip(FEATURES, row)]
                   for row in x.head(8).itertuples(index=False)]
    golden_rows = [[float(v) if isinstance(v, (int, float, np.floating)) and not isinstance(v, bool) else v
                    for v in row] for row in golden_rows]
    probabilities = clf.predict_proba(to_frame(golden_rows, features))
    classes = tuple(str(c) for c in clf.classes_)
    golden = tuple({"features": row, "label": classes[int(np.argmax(p))], "probabilities": p.tolist()}
                   for row, p in zip(golden_rows, probabilities))
    artifact = dump_estimator(clf)
    manifest = Manifest(
        name=model, version="", features=tuple(features), classes=classes,
        sha256=hashlib.sha256(artifact).hexdigest(), metrics={}, created_at=datetime.now(UTC),
        sklearn_version=sklearn.__version__, estimator="Pipeline", golden=golden, input="frame")
    return ModelStore(store_root).write(manifest, artifact), clf
