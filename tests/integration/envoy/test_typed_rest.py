"""Typed features over REST through a real Envoy (#22): JSON values are google.protobuf.Values as they are (a number,
a string for a category, true/false, null for missing), scored as the fitted pipeline scores them in process, and
every value the model cannot take is a 400 naming the feature (never a 5xx)."""
from __future__ import annotations

import shutil
from typing import Any

import numpy as np
import pytest
import requests

from inference.models.frame import to_frame
from tests.support.gateway import GatewayProc
from tests.support.procs import ServerProc
from tests.support.typed_model import FEATURES, write_typed_model

pytestmark = pytest.mark.envoy

ROWS: list[dict[str, Any]] = [
    {"tenure": 3, "monthly": 80.5, "contract": "Month-to-month", "senior": True},
    {"tenure": None, "monthly": 55.25, "contract": "Lifetime", "senior": None},
]


@pytest.fixture(scope="module")
def typed_gateway(trained_store, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gw-typed")
    shutil.copytree(trained_store, tmp / "models")
    manifest, pipeline = write_typed_model(tmp / "models")
    # scoring and validation only: recording typed rows and category drift are other parts of #22
    env = {"PREDMESH_PERSISTENCE": "off", "PREDMESH_DRIFT": "0"}
    with ServerProc(tmp / "models", tmp / "server.log", env=env) as server:
        with GatewayProc([server.target], tmp / "gw") as gw:
            yield gw, manifest, pipeline


def _expected(manifest, pipeline, rows):
    plain = [[None if r[n] is None else (float(r[n]) if type(r[n]) is int else r[n]) for n in FEATURES] for r in rows]
    return pipeline.predict_proba(to_frame(plain, manifest.features))


def test_json_values_are_scored_as_the_pipeline_scores_them(typed_gateway):
    gw, manifest, pipeline = typed_gateway
    expected = _expected(manifest, pipeline, ROWS)
    for row, want in zip(ROWS, expected):
        resp = requests.post(f"{gw.url}/v1/models/churn:predict", json={"features": row}, timeout=10)
        assert resp.status_code == 200, resp.text
        got = resp.json()["prediction"]["probabilities"]
        np.testing.assert_allclose([got["no"], got["yes"]], want, rtol=0, atol=1e-9)
    batch = requests.post(f"{gw.url}/v1/models/churn:predictBatch", json={"rows": [{"features": r} for r in ROWS]},
                          timeout=10)
    assert batch.status_code == 200, batch.text
    np.testing.assert_allclose([[p["probabilities"]["no"], p["probabilities"]["yes"]]
                                for p in batch.json()["predictions"]], expected, rtol=0, atol=1e-9)


@pytest.mark.parametrize("change, words", [
    ({"tenure": "abc"}, "feature 'tenure' is a number; got the string 'abc'"),
    ({"tenure": True}, "feature 'tenure' is a number; got true"),
    ({"monthly": None}, "feature 'monthly' is missing (null) and this model cannot impute it"),
    ({"contract": 3}, "feature 'contract' is categorical: send one of its categories as a string"),
    ({"senior": "yes"}, "feature 'senior' is a boolean; send true or false"),
    ({"senior": [True]}, "feature 'senior' is a list; send a number, string, boolean or null"),
    ({"contract": {"a": 1}}, "feature 'contract' is an object; send a number, string, boolean or null"),
])
def test_each_refusal_is_a_400_naming_the_feature(typed_gateway, change, words):
    gw, _, _ = typed_gateway
    resp = requests.post(f"{gw.url}/v1/models/churn:predict", json={"features": {**ROWS[0], **change}}, timeout=10)
    assert resp.status_code == 400, resp.text
    assert words in resp.json()["message"], resp.text
