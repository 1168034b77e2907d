"""Analytics over REST through the real Envoy gateway: predict, list, feedback and stats as a browser would."""
from __future__ import annotations

import pytest
import requests

from tests.conftest import IRIS_ROW
from tests.support.gateway import GatewayProc
from tests.support.procs import READONLY_TOKEN, WRITER_TOKEN, ServerProc, wait_for

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
        # anonymous and read-only labels are refused and change nothing (they once moved the reported accuracy)
        assert requests.post(url, json={"label": "virginica"}, timeout=5).status_code == 401
        assert requests.post(url, json={"label": "virginica"}, timeout=5,
                             headers={"Authorization": f"Bearer {READONLY_TOKEN}"}).status_code == 403
        assert requests.get(f"{gw.url}/v1/stats", params={"model": "iris"}, timeout=5).json()["quality"] == []
        writer = {"Authorization": f"Bearer {WRITER_TOKEN}"}  # the header passes through Envoy as gRPC metadata
        wrong = requests.post(url, json={"label": "virginica"}, timeout=5, headers=writer)
        assert wrong.status_code == 200 and wrong.json()["correct"] is False
        stats = requests.get(f"{gw.url}/v1/stats", params={"model": "iris"}, timeout=5).json()
        assert stats["by_transport"] == {"rest": "1"} and stats["quality"][0]["accuracy"] == 0
        right = requests.post(url, json={"label": prediction["label"]}, timeout=5, headers=writer)
        assert right.status_code == 200 and right.json()["correct"] is True
        [quality] = requests.get(f"{gw.url}/v1/stats", timeout=5).json()["quality"]
        assert (quality["feedback_count"], quality["accuracy"]) == ("1", 1)

        assert requests.post(url, json={"label": "dog"}, timeout=5, headers=writer).status_code == 400
        missing = requests.post(f"{gw.url}/v1/predictions/no-such-id:feedback", json={"label": "setosa"}, timeout=5,
                                headers=writer)
        assert missing.status_code == 404


def test_the_transport_filter_takes_the_short_name_as_the_docs_write_it(model_store, tmp_path):
    """`GET /v1/predictions?transport=rest` was refused (400: only TRANSPORT_REST parsed): the short name, in any
    case, and the enum's own name list the same rows; answers keep the full name; a wrong name stays a 400 that
    names the field; the OpenAPI document lists the short names for the query parameter."""
    with ServerProc(model_store, tmp_path / "server.log") as server, \
            GatewayProc([server.target], tmp_path / "gw") as gw:
        answer = requests.post(f"{gw.url}/v1/models/iris:predict",
                               json={"features": IRIS_ROW, "request_id": "rest-short"}, timeout=5)
        assert answer.status_code == 200, answer.text
        wanted = [answer.json()["prediction"]["prediction_id"]]

        def ids(transport: str):
            r = requests.get(f"{gw.url}/v1/predictions", params={"transport": transport}, timeout=5)
            assert r.status_code == 200, (transport, r.status_code, r.text)
            return [p["prediction"]["prediction_id"] for p in r.json()["predictions"]]

        wait_for(lambda: ids("TRANSPORT_REST") == wanted, 10, what="the stored prediction")
        for spelling in ("rest", "REST", "Rest", "transport_rest"):
            assert ids(spelling) == wanted, spelling
        assert ids("grpc") == ids("queue") == []
        listed = requests.get(f"{gw.url}/v1/predictions", params={"transport": "rest"}, timeout=5).json()
        assert listed["predictions"][0]["transport"] == "TRANSPORT_REST"
        wrong = requests.get(f"{gw.url}/v1/predictions", params={"transport": "fax"}, timeout=5)
        assert wrong.status_code == 400 and "transport" in wrong.text

        doc = requests.get(f"{gw.url}/openapi.json", timeout=5).json()
        [param] = [p for p in doc["paths"]["/v1/predictions"]["get"]["parameters"] if p["name"] == "transport"]
        assert {"rest", "grpc", "queue", "batch", "ui", "TRANSPORT_REST"} <= set(param["schema"]["enum"])
        schemas = doc["components"]["schemas"]
        stored = schemas["predmesh.v1.StoredPrediction"]["properties"]["transport"]
        assert stored["allOf"] == [{"$ref": "#/components/schemas/predmesh.v1.Transport"}]  # enums are components
        enum = schemas["predmesh.v1.Transport"]["enum"]
        assert "TRANSPORT_REST" in enum and "rest" not in enum and "REST" not in enum  # answers carry the full name
