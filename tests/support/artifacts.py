"""Build broken, hostile and valid variants of stored model versions for reload and loader tests."""
from __future__ import annotations

import hashlib
import json
import pickle
import shutil
from pathlib import Path


def _manifest(path: Path) -> dict:
    return json.loads((path / "metadata.json").read_text())


def _write(path: Path, manifest: dict, artifact: bytes | None = None) -> None:
    if artifact is not None:
        (path / "model.skops").write_bytes(artifact)
    (path / "metadata.json").write_text(json.dumps(manifest))


def clone_version(store: Path, model: str, source: str, version: str) -> Path:
    """Copy a stored version under a new version number (manifest restamped)."""
    target = store / model / version
    shutil.copytree(store / model / source, target)
    manifest = _manifest(target)
    manifest["version"] = version
    _write(target, manifest)
    return target


def truncated(store: Path, model: str, source: str, version: str) -> Path:
    """The artifact cut in half, with a manifest hash that matches the truncated bytes (so parsing must fail)."""
    target = clone_version(store, model, source, version)
    data = (target / "model.skops").read_bytes()[: 2000]
    manifest = _manifest(target)
    manifest["sha256"] = hashlib.sha256(data).hexdigest()
    _write(target, manifest, data)
    return target


def hash_mismatch(store: Path, model: str, source: str, other: str, version: str) -> Path:
    """A valid artifact (from another version) whose hash is not the one in the manifest."""
    target = clone_version(store, model, source, version)
    shutil.copy(store / model / other / "model.skops", target / "model.skops")
    return target


def wrong_feature_count(store: Path, model: str, source: str, version: str) -> Path:
    """A correctly hashed artifact whose estimator expects 3 features while the manifest lists 4."""
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    from inference.models.loader import dump_estimator

    x, y = load_iris(return_X_y=True)
    data = dump_estimator(LogisticRegression(max_iter=500).fit(x[:, :3], y))
    target = clone_version(store, model, source, version)
    manifest = _manifest(target)
    manifest["sha256"] = hashlib.sha256(data).hexdigest()
    _write(target, manifest, data)
    return target


def failing_smoke_test(store: Path, model: str, source: str, version: str) -> Path:
    """A valid artifact whose golden rows claim different labels than the estimator gives."""
    target = clone_version(store, model, source, version)
    manifest = _manifest(target)
    classes = manifest["classes"]
    for row in manifest["golden"]:
        row["label"] = classes[(classes.index(row["label"]) + 1) % len(classes)]
    _write(target, manifest)
    return target


class Canary:
    """A pickle whose loading would create a marker file: proof of code execution if it ever appears."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def canary_pickle(store: Path, model: str, source: str, version: str, marker: Path) -> Path:
    """A 'model.skops' that is really a booby-trapped pickle, with a manifest hash that matches it."""
    data = pickle.dumps(Canary(marker))
    target = clone_version(store, model, source, version)
    manifest = _manifest(target)
    manifest["sha256"] = hashlib.sha256(data).hexdigest()
    _write(target, manifest, data)
    return target


def untrusted_types(store: Path, model: str, source: str, version: str) -> Path:
    """A real skops archive containing a type outside the trusted set (a FunctionTransformer calling os.system)."""
    import os

    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    from inference.models.loader import dump_estimator

    x, y = load_iris(return_X_y=True)
    pipe = make_pipeline(FunctionTransformer(os.system), LogisticRegression(max_iter=500))
    pipe.steps[0] = ("hostile", FunctionTransformer(func=os.system, validate=False))
    pipe.steps[1][1].fit(x, y)
    data = dump_estimator(pipe)
    target = clone_version(store, model, source, version)
    manifest = _manifest(target)
    manifest["sha256"] = hashlib.sha256(data).hexdigest()
    _write(target, manifest, data)
    return target


def crafted_forest(store: Path, model: str, source: str, version: str, mutate, trees: int | None = None) -> Path:
    """A copy of a stored RandomForest version whose first tree mutate(state) alters (state: the Tree's
    __getstate__ dict: nodes, values, max_depth, node_count), re-serialised with skops and hashed correctly: only
    the tree's structure is wrong. With trees, only the first `trees` trees are kept (a smaller, faster artifact)."""
    import copy

    from inference.models.loader import dump_estimator, load_estimator
    from inference.models.manifest import decode

    target = clone_version(store, model, source, version)
    manifest = decode((target / "metadata.json").read_bytes(), None)
    estimator = load_estimator(target, manifest)
    if trees is not None:
        estimator.estimators_ = estimator.estimators_[:trees]
        estimator.n_estimators = trees
    tree = estimator.estimators_[0].tree_
    state = copy.deepcopy(tree.__getstate__())
    mutate(state)
    tree.__setstate__(state)
    data = dump_estimator(estimator)
    raw = _manifest(target)
    raw["sha256"] = hashlib.sha256(data).hexdigest()
    _write(target, raw, data)
    return target


def _set(field: str, value, node: int | None = None):
    def mutate(state):
        nodes = state["nodes"]
        internal = [i for i in range(len(nodes)) if nodes[i]["left_child"] != -1]
        nodes[internal[0] if node is None else node][field] = value
    return mutate


# Structural defects of a tree, each of which scikit-learn's compiled code would follow without a bounds check.
TREE_DEFECTS = {
    "left child out of range": _set("left_child", 10 ** 9),
    "right child negative": _set("right_child", -7),
    "child pointing back at the root": _set("left_child", 0),
    "feature out of range": _set("feature", 10 ** 6),
    "negative feature": _set("feature", -3),
    "NaN threshold": _set("threshold", float("nan")),
    "infinite leaf value": lambda state: state["values"].__setitem__((1, 0, 0), float("inf")),
    "depth lie": lambda state: state.__setitem__("max_depth", 10 ** 12),
}
