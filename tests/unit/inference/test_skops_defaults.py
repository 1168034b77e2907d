"""skops' default trusted types, stored once (inference/models/skops_defaults.py): the same lists skops computes, put
in place before skops.io is imported, and left to skops when the installed versions are not the stored ones."""
from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest

from inference.models import skops_defaults, skops_lists
from tests.support.procs import ROOT


def test_the_stored_lists_are_what_skops_computes_for_the_installed_versions():
    # fails after a lock upgrade of skops, scikit-learn, numpy or scipy: `python -m inference.models.skops_defaults`
    assert skops_defaults.installed_versions() == skops_lists.VERSIONS
    stored = {name: list(names) for name, names in skops_lists.LISTS.items()}
    assert {**stored, **skops_defaults.TYPE_LISTS} == skops_defaults.computed_lists()


def test_a_process_loading_a_model_uses_the_stored_lists_without_listing_every_estimator(model_store):
    probe = ("import json, sys\n"
             "from pathlib import Path\n"
             "from inference.models.loader import load_estimator, read_manifest\n"
             "path = Path(sys.argv[1])\n"
             "load_estimator(path, read_manifest(path, None))\n"
             "from skops.io import _general, _numpy\n"
             "module = sys.modules['skops.io._trusted_types']\n"
             "print(json.dumps({'stored': getattr(module, '__predmesh_stored__', False),\n"
             "                  'walked': 'sklearn.utils._testing' in sys.modules,\n"
             "                  'estimators': _general.SKLEARN_ESTIMATOR_TYPE_NAMES,\n"
             "                  'dtypes': _numpy.NUMPY_DTYPE_TYPE_NAMES}))\n")
    out = json.loads(subprocess.run([sys.executable, "-c", probe, str(model_store / "iris" / "2")], cwd=ROOT,
                                    check=True, capture_output=True, text=True, timeout=60).stdout)
    assert out["stored"] is True
    assert out["walked"] is False  # sklearn.utils.all_estimators (what the stored lists save) did not run
    assert out["estimators"] == list(skops_lists.LISTS["SKLEARN_ESTIMATOR_TYPE_NAMES"])
    assert out["dtypes"] == list(skops_lists.LISTS["NUMPY_DTYPE_TYPE_NAMES"])


def test_listing_the_store_imports_neither_skops_nor_scikit_learn(model_store):
    # the supervisor of PREDMESH_PROCESSES > 1 lists the store and serves no model: ~1.3 CPU s less to start
    probe = ("import json, sys\n"
             "from pathlib import Path\n"
             "from inference.models.store import ModelStore\n"
             "store = ModelStore(Path(sys.argv[1]))\n"
             "print(json.dumps({'models': store.models(), 'manifests': len(store.manifests('iris')),\n"
             "                  'imported': sorted({'skops', 'sklearn', 'scipy'} & set(sys.modules))}))\n")
    out = json.loads(subprocess.run([sys.executable, "-c", probe, str(model_store)], cwd=ROOT, check=True,
                                    capture_output=True, text=True, timeout=60).stdout)
    assert out == {"models": ["iris"], "manifests": 2, "imported": []}


@pytest.fixture
def unimported(monkeypatch):
    """sys.modules as before skops.io's first import; whatever this process had is put back afterwards."""
    monkeypatch.setitem(sys.modules, skops_defaults.MODULE, None)
    monkeypatch.delitem(sys.modules, skops_defaults.MODULE)


def test_other_versions_leave_skops_to_compute_its_lists(unimported, monkeypatch, caplog):
    monkeypatch.setattr(skops_lists, "VERSIONS", {**skops_lists.VERSIONS, "sklearn": "0.0.1"})
    with caplog.at_level(logging.WARNING, logger=skops_defaults.__name__):
        assert skops_defaults.install() is False
    assert skops_defaults.MODULE not in sys.modules
    assert "python -m inference.models.skops_defaults" in caplog.text


def test_matching_versions_install_the_stored_lists(unimported):
    assert skops_defaults.install() is True
    module = sys.modules[skops_defaults.MODULE]
    for name, names in skops_lists.LISTS.items():
        assert getattr(module, name) == list(names)
    assert [int, float, str, bool] == module.PRIMITIVES_TYPES
    assert skops_defaults.install() is True  # in place already: nothing done twice
