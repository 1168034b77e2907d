"""What a manifest records about a model's data: each feature's training distribution, the class profiles, golden
rows and holdout metrics, plus what the estimator accepts (a missing value, an unseen category) found by probing
it. Shared by the Iris demo (inference/models/train.py), training from a file (tabular.py) and import
(importer.py)."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from sklearn.metrics import accuracy_score, precision_score, recall_score, roc_auc_score

from inference.models.frame import rows_matrix, to_frame
from inference.models.manifest import ClassProfile, Feature

GOLDEN_ROWS = 8
PROBE_ROWS = 16  # sample rows each probe scores
UNSEEN = "\x00predmesh-unseen-category"  # a category no training data has, for the accepts_unknown probe
# Rows of plain values (object matrix or lists, schema order) → class probabilities, as serving computes them.
Score = Callable[[np.ndarray | list], np.ndarray]


def scorer(estimator, features: Sequence[Feature], input: str) -> Score:
    """predict_proba on rows of plain values converted as serving converts them (Manifest.input): a DataFrame
    through frame.to_frame ("frame"), or a float64 matrix, None as NaN ("array")."""
    if input == "frame":
        return lambda rows: estimator.predict_proba(to_frame(rows, features))
    return lambda rows: estimator.predict_proba(rows_matrix(rows, len(features)).astype(np.float64))


def features(names: Sequence[str], x: np.ndarray) -> tuple[Feature, ...]:
    """The schema of an all-number float matrix with no missing value (the Iris demo): range, mean, std, decile
    edges and bin shares of each feature."""
    return tuple(number_feature(name, x[:, i], 0.0) for i, name in enumerate(names))


def number_feature(name: str, values: np.ndarray, missing_share: float) -> Feature:
    """A number feature from its training values that were present (float64): range, mean, std, deciles, shares."""
    deciles = np.percentile(values, np.arange(10, 100, 10))
    return Feature(name, float(values.min()), float(values.max()), float(values.mean()), float(values.std()),
                   tuple(float(q) for q in deciles), bin_shares(values, deciles), missing_share=missing_share)


def bin_shares(values: np.ndarray, edges: np.ndarray) -> tuple[float, ...]:
    """The share of values in each bin the edges make (bin i: edges[i-1] < v <= edges[i]), as drift bins them."""
    counts = np.bincount(np.searchsorted(edges, values, side="left"), minlength=len(edges) + 1)
    return tuple(float(c) for c in counts / len(values))


def typed_features(rows: np.ndarray, names: Sequence[str], kinds: Sequence[str]) -> tuple[Feature, ...]:
    """The schema of rows of plain values (object matrix, schema order, None = missing) with each feature's
    training distribution: numbers as features() records them (over the values present); categories their values,
    most common first, with their shares of the rows that have a value; booleans the shares of false and true (and
    the share of true as mean); every kind its missing share. nullable/accepts_unknown come from probe()."""
    out = []
    for i, (name, kind) in enumerate(zip(names, kinds)):
        column = rows[:, i]
        present = column[[v is not None for v in column]]
        missing_share = 1.0 - len(present) / len(column)
        if kind == "number":
            out.append(number_feature(name, present.astype(np.float64), missing_share))
        elif kind == "boolean":
            flags = present.astype(bool)
            true, false = float(np.mean(flags)), float(np.mean(~flags))
            out.append(Feature(name, 0.0, 1.0, true, float(flags.std()), kind="boolean",
                               categories=(("false", false), ("true", true)), missing_share=missing_share))
        else:
            values, counts = np.unique(present.astype(str), return_counts=True)
            order = sorted(range(len(values)), key=lambda k: (-counts[k], values[k]))
            categories = tuple((str(values[k]), float(counts[k] / len(present))) for k in order)
            out.append(Feature(name, 0.0, 0.0, kind="category", categories=categories, missing_share=missing_share))
    return tuple(out)


def class_profiles(classes: Sequence[str], x: np.ndarray, y: np.ndarray) -> tuple[ClassProfile, ...]:
    """Per class (in class order): share of the training rows and per-feature mean and std. x is a float matrix
    whose class k rows are those where y == k (the Iris demo's integer targets)."""
    return tuple(
        ClassProfile(label, float(np.mean(y == k)), tuple(float(v) for v in x[y == k].mean(axis=0)),
                     tuple(float(v) for v in x[y == k].std(axis=0)))
        for k, label in enumerate(classes))


def typed_class_profiles(classes: Sequence | np.ndarray, rows: np.ndarray, features: Sequence[Feature],
                         y: np.ndarray) -> tuple[ClassProfile, ...]:
    """class_profiles for rows of plain values and labels y (classes in the estimator's order): mean and std of
    the values present for numbers, the share of true (and its std) for booleans, 0.0 for categories."""
    profiles = []
    for label in classes:
        own = rows[y == label]
        mean, std = [], []
        for i, f in enumerate(features):
            present = [v for v in own[:, i] if v is not None] if f.kind != "category" else []
            values = np.asarray(present, dtype=np.float64)
            mean.append(float(values.mean()) if len(values) else 0.0)
            std.append(float(values.std()) if len(values) else 0.0)
        profiles.append(ClassProfile(str(label), float(np.mean(y == label)), tuple(mean), tuple(std)))
    return tuple(profiles)


def estimator_name(estimator) -> str:
    """The class name of what classifies: a pipeline's last step, a calibration wrapper's estimator in brackets
    (e.g. "HistGradientBoostingClassifier", "CalibratedClassifierCV(SVC)")."""
    steps = getattr(estimator, "steps", None)
    final = steps[-1][1] if steps else estimator
    inner = getattr(final, "estimator", None) if type(final).__name__ == "CalibratedClassifierCV" else None
    return f"{type(final).__name__}({type(inner).__name__})" if inner is not None else type(final).__name__


def golden_rows(score: Score, rows: np.ndarray, classes: Sequence[str]) -> tuple[dict, ...]:
    """Up to GOLDEN_ROWS rows (with up to two rows that miss a value among them, so the smoke test covers
    imputation) with the label and probabilities the estimator gives them, as serving computes them."""
    gappy = [i for i, row in enumerate(rows) if any(v is None for v in row)][:2]
    chosen = gappy + [i for i in range(len(rows)) if i not in gappy][:GOLDEN_ROWS - len(gappy)]
    picked = [[_json_value(v) for v in rows[i]] for i in sorted(chosen)]
    probabilities = score(picked)
    return tuple({"features": row, "label": classes[int(np.argmax(p))], "probabilities": p.tolist()}
                 for row, p in zip(picked, probabilities))


def _json_value(value: object) -> object:
    """A plain value as JSON keeps it: numpy scalars become Python ones."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    return float(value)  # type: ignore[arg-type]


def metrics(prefix: str, y: np.ndarray, predicted: np.ndarray, probabilities: np.ndarray,
            classes: Sequence) -> dict[str, float]:
    """accuracy, macro precision and recall, and (two classes) ROC AUC of predictions, keyed prefix_<name>."""
    out = {
        f"{prefix}_accuracy": float(accuracy_score(y, predicted)),
        f"{prefix}_macro_precision": float(precision_score(y, predicted, average="macro", zero_division=0)),
        f"{prefix}_macro_recall": float(recall_score(y, predicted, average="macro", zero_division=0)),
    }
    if len(classes) == 2 and len(set(y.tolist())) == 2:
        out[f"{prefix}_roc_auc"] = float(roc_auc_score(y == classes[1], probabilities[:, 1]))
    return out


def probe(score: Score, rows: np.ndarray, features: Sequence[Feature]) -> tuple[Feature, ...]:
    """The features with nullable (the estimator scores a row where it is missing) and, for a category,
    accepts_unknown (it scores a category it never saw) found by asking the estimator on sample rows: a feature
    whose probe raises or gives non-finite probabilities is refused at the edge instead. A number the estimator
    refuses between its training values (a code it one-hot or ordinal encodes, e.g. a plan or store number) gets
    its training values as categories: the edge accepts those numbers only, instead of the estimator failing."""
    sample = rows[:PROBE_ROWS]
    probed = []
    for i, f in enumerate(features):
        nullable = _scores(score, sample, i, None)
        unseen = f.kind == "category" and _scores(score, sample, i, _unseen(f))
        categories = f.categories
        if f.kind == "number":
            present = np.array([v for v in rows[:, i] if v is not None], dtype=np.float64)
            if len(present) and not _scores(score, sample, i, _unseen_number(present)):
                categories = number_values(present)  # a code: the model takes only the values it was fitted on
        probed.append(Feature(f.name, f.min, f.max, f.mean, f.std, f.quantiles, f.shares, kind=f.kind,
                              categories=categories, missing_share=f.missing_share, nullable=nullable,
                              accepts_unknown=unseen))
    return tuple(probed)


def number_values(present: np.ndarray) -> tuple[tuple[str, float], ...]:
    """A number feature's distinct training values (present: float64), most common first, with their shares, as
    Feature.categories records them for a number the model accepts only these values of."""
    values, counts = np.unique(present, return_counts=True)
    order = sorted(range(len(values)), key=lambda k: (-counts[k], values[k]))
    return tuple((number_text(float(values[k])), float(counts[k] / len(present))) for k in order)


def number_text(value: float) -> str:
    """A number as Feature.categories holds it: an integral value without ".0" ("3"), any other exactly (repr);
    float(number_text(v)) == v."""
    return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)


def _unseen_number(present: np.ndarray) -> float:
    """A number inside the training range that no training row has: halfway between the two smallest distinct
    values (or the only value plus a half)."""
    values = np.unique(present)
    return float((values[0] + values[1]) / 2) if len(values) > 1 else float(values[0]) + 0.5


def _unseen(feature: Feature) -> str:
    value = UNSEEN
    while value in feature.category_names:
        value += "?"
    return value


def _scores(score: Score, sample: np.ndarray, column: int, value: object) -> bool:
    changed = sample.copy()
    changed[:, column] = value
    try:
        probabilities = np.asarray(score(changed), dtype=np.float64)
    except Exception:  # the estimator refuses it: whatever it raises (ValueError, TypeError, KeyError…)
        return False
    return probabilities.shape[0] == len(sample) and bool(np.all(np.isfinite(probabilities)))
