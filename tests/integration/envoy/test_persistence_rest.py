"""Analytics over REST through the real Envoy gateway: predict, list, feedback and stats as a browser would."""
from __future__ import annotations

import pytest
import requests

from tests.conftest import IRIS_ROW
from tests.support.gateway import GatewayProc
from tests.support.procs import ServerProc, wait_for

pytestmark = pytest.mark.envoy


def test_feedback_and_stats_over_rest(model_store, tmp_path):
    with ServerProc(model_store, tmp_path / "server.log") as server, \
            GatewayProc([server.target], tmp_path / "gw") as gw:
        answer = requests.post(f"{gw.url}/v1/models/iris:predict",
                               json={"features": IRIS_ROW, "request_id": "rest-1"}, timeout=5)
        assert answer.status_code == 200, answer.text
        prediction = answer.json()["prediction"]
        listed = wait_for(lambda: requests.get(f"{gw.url}/v1/predictions", params={"transport": "TRANSPORT_REST"},
                                               timeout=5).json().get("predictions"), 10, what="stored prediction")
        assert [p["prediction"]["prediction_id"] for p in listed] == [prediction["prediction_id"]]
        assert listed[0]["transport"] == "TRANSPORT_REST" and listed[0]["features"] == IRIS_ROW

        url = f"{gw.url}/v1/predictions/{prediction['prediction_id']}:feedback"
        wrong = requests.post(url, json={"label": "virginica"}, timeout=5)
        assert wrong.status_code == 200 and wrong.json()["correct"] is False
        stats = requests.get(f"{gw.url}/v1/stats", params={"model": "iris"}, timeout=5).json()
        assert stats["by_transport"] == {"rest": "1"} and stats["quality"][0]["accuracy"] == 0
        right = requests.post(url, json={"label": prediction["label"]}, timeout=5)
        assert right.status_code == 200 and right.json()["correct"] is True
        [quality] = requests.get(f"{gw.url}/v1/stats", timeout=5).json()["quality"]
        assert (quality["feedback_count"], quality["accuracy"]) == ("1", 1)

        assert requests.post(url, json={"label": "dog"}, timeout=5).status_code == 400
        missing = requests.post(f"{gw.url}/v1/predictions/no-such-id:feedback", json={"label": "setosa"}, timeout=5)
        assert missing.status_code == 404
