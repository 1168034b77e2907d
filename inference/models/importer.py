"""Bring a fitted scikit-learn estimator or pipeline into the model store: a skops file loaded under the server's
own trust rules (inference/models/loader.py), or, only when the user says they trust it, a joblib/pickle file
unpickled here and converted to skops, so the server never unpickles. The schema comes from the estimator's
feature_names_in_ and the kinds of a sample's columns; what it accepts (missing values, unseen categories) from
probing it on the sample; the version is written only once it scores the sample."""
from __future__ import annotations

import hashlib
import logging
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import sklearn

from inference.errors import UntrustedArtifact
from inference.models import profile
from inference.models.columns import TableError, check_classes, kind_of, labels, plain_rows, read_table
from inference.models.loader import dump_estimator, load_estimator
from inference.models.manifest import ARTIFACT, Manifest
from inference.models.store import ModelStore

log = logging.getLogger(__name__)
ZIP_MAGIC = b"PK\x03\x04"  # a skops file is a zip archive; a pickle (or joblib file) is not


def import_model(store: ModelStore, model: str, file: Path, sample: Path, target: str | None = None,
                 trust_pickle: bool = False) -> Manifest:
    """Check the fitted estimator in `file` against the sample and write it as a new version of `model`; returns
    the manifest. Raises TableError (naming the file or column) when it cannot be used."""
    file = Path(file)
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise TableError(f"cannot read {file}: {exc.strerror}") from None
    if data[:4] != ZIP_MAGIC:
        if not trust_pickle:
            raise TableError(f"{file.name} is not a skops file (it looks like a pickle or joblib file, which runs "
                             f"code when loaded); save it with skops.io.dump, or pass --trust-pickle if you trust "
                             f"it, to convert it to skops")
        data = dump_estimator(_unpickle(file))
    estimator = trusted_load(data, file.name)
    table = read_table(sample)
    if target is not None and target not in table.columns:
        raise TableError(f"target column {target!r} is not in {Path(sample).name}")
    names, input = _schema(estimator, table, target, Path(sample).name)
    kinds = [kind_of(table[n], limit_text=False) for n in names]
    if input == "array" and set(kinds) != {"number"}:
        bad = next(n for n, k in zip(names, kinds) if k != "number")
        raise TableError(f"the model was fitted on an array (it has no feature_names_in_), so it takes numbers "
                         f"only, but sample column {bad!r} is not numeric; refit it on a DataFrame")
    rows = plain_rows(table, names, kinds)
    schema = profile.typed_features(rows, names, kinds)
    if not hasattr(estimator, "predict_proba"):
        raise TableError(f"{type(estimator).__name__} has no predict_proba (an SVC needs probability=True)")
    classes_ = np.asarray(getattr(estimator, "classes_", ()))
    classes = [str(c) for c in classes_]
    if len(set(classes)) < 2:
        raise TableError(f"{file.name}: the model has {len(classes)} distinct class labels; a classifier has two "
                         f"or more")
    check_classes(classes, file.name)
    score = profile.scorer(estimator, schema, input)
    try:
        probabilities = np.asarray(score(rows), dtype=np.float64)
    except Exception as exc:  # whatever the estimator raises on the sample is the user's to see
        raise TableError(f"the model cannot score {Path(sample).name}: {type(exc).__name__}: "
                         f"{' '.join(str(exc).split())[:300]}") from None
    if probabilities.shape != (len(rows), len(classes)) or not np.all(np.isfinite(probabilities)):
        raise TableError(f"the model's probabilities on {Path(sample).name} have shape {probabilities.shape} or "
                         f"are not finite; expected ({len(rows)}, {len(classes)}) finite values")
    predicted = classes_[probabilities.argmax(axis=1)]
    if target is not None:
        y = labels(table[table[target].notna()], target)
        seen = table[target].notna().to_numpy()
        metrics = profile.metrics("sample", y, predicted[seen], probabilities[seen], list(classes_))
        profiled_rows, profiled_y = rows[seen], y
    else:  # no labels: the class shares the model predicts on the sample
        metrics, profiled_rows, profiled_y = {}, rows, predicted
    features = profile.probe(score, rows, schema)
    manifest = Manifest(
        name=model, version="", features=features, classes=tuple(classes),
        sha256=hashlib.sha256(data).hexdigest(), metrics=metrics, created_at=datetime.now(UTC),
        sklearn_version=sklearn.__version__, estimator=profile.estimator_name(estimator),
        golden=profile.golden_rows(score, rows, classes),
        class_profiles=profile.typed_class_profiles(classes_, profiled_rows, features, profiled_y), input=input)
    stored = store.write(manifest, data)
    log.info("imported %s version %s (%s) from %s", model, stored.version, stored.estimator, file)
    return stored


def trusted_load(data: bytes, shown_as: str):
    """The estimator in skops bytes, loaded exactly as the server loads a version (size limit, trusted types, tree
    checks: loader.load_estimator), so what imports is what serves."""
    digest = hashlib.sha256(data).hexdigest()
    placeholder = Manifest(name="import", version="0", features=(), classes=(), sha256=digest, metrics={},
                           created_at=datetime.now(UTC), sklearn_version="", estimator="")
    with tempfile.TemporaryDirectory(prefix="predmesh-import-") as tmp:
        (Path(tmp) / ARTIFACT).write_bytes(data)
        try:
            return load_estimator(Path(tmp), placeholder)
        except UntrustedArtifact as exc:
            raise TableError(f"{shown_as}: the server would refuse it: "
                             f"{str(exc).replace(ARTIFACT, 'the skops file')}") from None


def _unpickle(file: Path):
    """The object in a joblib or pickle file; runs whatever code the file holds (the user said they trust it)."""
    import joblib  # scikit-learn's own dependency; reads plain pickles too

    try:
        return joblib.load(file)
    except Exception as exc:  # a corrupt or foreign file fails in many ways
        raise TableError(f"cannot unpickle {file.name}: {type(exc).__name__}: {exc}") from None


def _schema(estimator, table: pd.DataFrame, target: str | None, sample: str) -> tuple[list[str], str]:
    """The feature names in the estimator's order and its input: feature_names_in_ ("frame"), or, for an estimator
    fitted on an array, the sample's columns but the target in file order ("array")."""
    named = getattr(estimator, "feature_names_in_", None)
    if named is not None:
        names = [str(n) for n in named]
        absent = [n for n in names if n not in table.columns]
        if absent:
            raise TableError(f"sample {sample} has no column {absent[0]!r}, which the model takes "
                             f"(it takes {', '.join(names)})")
        return names, "frame"
    names = [str(c) for c in table.columns if c != target]
    expected = getattr(estimator, "n_features_in_", None)
    if expected != len(names):
        raise TableError(f"the model has no feature_names_in_ (it was fitted on an array) and takes {expected} "
                         f"features; sample {sample} has {len(names)} columns besides the target: give a sample "
                         f"with exactly its columns in order, or refit it on a DataFrame")
    return names, "array"

