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

    from inference.model_loader import dump_estimator

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

    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.datasets import load_iris

    from inference.model_loader import dump_estimator

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
