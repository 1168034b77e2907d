"""Crafted variants of every type the loader trusts beyond skops' defaults, correctly hashed: refused before
compiled code follows their indices, or (a neighbour index) rebuilt so the stored one is never used. Where it is
cheap, a subprocess shows what the unchecked object does to the process."""
from __future__ import annotations

import re
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from inference.errors import UntrustedArtifact
from inference.models.loader import load_estimator, read_manifest
from tests.support.estimators import CRAFTS, crafted, fitted

ROOT = Path(__file__).resolve().parents[3]
REFUSED = sorted(name for name, (_, _, words) in CRAFTS.items() if words)
REBUILT = sorted(name for name, (_, _, words) in CRAFTS.items() if not words)


def _load(path):
    return load_estimator(path, read_manifest(path, None))


@pytest.mark.parametrize("name", REFUSED)
def test_crafted_structures_are_refused(tmp_path, name):
    kind, mutate, words = CRAFTS[name]
    assert words is not None
    path = crafted(tmp_path, kind, mutate)
    with pytest.raises(UntrustedArtifact, match=re.escape(words)):
        _load(path)


@pytest.mark.parametrize("name", REBUILT)
def test_a_crafted_neighbour_index_is_replaced_by_a_rebuilt_one(tmp_path, name):
    kind, mutate, _ = CRAFTS[name]
    genuine, rows = fitted(kind, 3)
    loaded = _load(crafted(tmp_path, kind, mutate))
    index = np.asarray(loaded[-1]._tree.get_arrays()[1])
    assert sorted(index) == list(range(len(rows)))  # a permutation of the training points again
    assert np.allclose(loaded.predict_proba(rows), genuine.predict_proba(rows), rtol=0, atol=1e-12)


_UNCHECKED = """
import sys
from tests.support.estimators import CRAFTS, fitted
kind, mutate, _ = CRAFTS[sys.argv[1]]
estimator, rows = fitted(kind, 3)
mutate(estimator[-1])
estimator.predict_proba(rows)
print("scored")
"""


def _no_core_dump() -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


@pytest.mark.parametrize("name", ["hgb feature index", "hgb child out of range", "kneighbors scrambled index"])
def test_the_unchecked_object_would_crash_the_server_process(name):
    # what the checks prevent: scikit-learn scoring the same crafted object, unchecked, kills the process
    done = subprocess.run([sys.executable, "-c", _UNCHECKED, name], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, preexec_fn=_no_core_dump)
    assert done.returncode < 0, (done.returncode, done.stdout, done.stderr[-500:])  # killed by a signal
    assert "scored" not in done.stdout


@pytest.mark.parametrize("final, words", [
    ("radius", "outside a KNeighborsClassifier's search index"),  # a stored BallTree nobody rebuilds
    ("svr", "SVR is not supported"),
    ("bagging-subsets", "inside a BaggingClassifier"),  # trees fed a column subset: not checked, not accepted
])
def test_other_estimators_holding_checked_structures_stay_refused(tmp_path, final, words):
    from sklearn.ensemble import BaggingClassifier
    from sklearn.neighbors import RadiusNeighborsClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.svm import SVR
    from sklearn.tree import DecisionTreeClassifier

    from tests.support.estimators import _onehot, store

    estimator, rows = fitted("logistic", 2)
    y = estimator.predict(rows)
    last = {"radius": RadiusNeighborsClassifier(radius=5.0, algorithm="ball_tree"),
            "svr": SVR(), "bagging-subsets": BaggingClassifier(DecisionTreeClassifier(), 3, max_features=0.5)}[final]
    if final == "svr":
        y = (y == y[0]).astype(float)
    pipeline = Pipeline([("pre", _onehot()), ("clf", last)]).fit(rows, y)
    path = store(tmp_path, "m", pipeline, rows, classes=("0", "1"))
    with pytest.raises(UntrustedArtifact, match=re.escape(words)):
        _load(path)

