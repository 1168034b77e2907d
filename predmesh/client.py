"""The typed Python client: the one place in predmesh that opens gRPC channels."""
from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import grpc

from predmesh.errors import from_rpc_error
from predmesh.v1 import (
    admin_pb2, admin_pb2_grpc, analytics_pb2, analytics_pb2_grpc, inference_pb2, inference_pb2_grpc, model_pb2,
)

TRANSPORT_HEADER = "x-predmesh-transport"
Transport = model_pb2.Transport

# Retries only where a request cannot have been processed twice in a harmful way: UNAVAILABLE (connection
# refused, server draining). Predict is idempotent on request_id, so a retry never stores a second row.
_SERVICE_CONFIG = json.dumps({
    "methodConfig": [{
        "name": [{"service": "predmesh.v1.InferenceService"}, {"service": "predmesh.v1.AnalyticsService"},
                 {"service": "predmesh.v1.ModelAdminService"}],
        "retryPolicy": {
            "maxAttempts": 3,
            "initialBackoff": "0.05s",
            "maxBackoff": "0.5s",
            "backoffMultiplier": 2,
            "retryableStatusCodes": ["UNAVAILABLE"],
        },
    }],
    "retryThrottling": {"maxTokens": 10, "tokenRatio": 0.1},
})


@dataclass(frozen=True)
class TlsConfig:
    """PEM bytes for a TLS channel; client_cert and client_key together enable mTLS."""

    root_certificates: bytes | None = None
    client_cert: bytes | None = None
    client_key: bytes | None = None
    server_name: str | None = None


class PredmeshClient:
    """Typed access to every predmesh RPC; every call carries a deadline and raises PredmeshError subclasses."""

    def __init__(self, target: str, *, timeout: float = 5.0, transport: int = Transport.TRANSPORT_GRPC,
                 admin_token: str | None = None, tls: TlsConfig | None = None,
                 max_message_bytes: int = 4 * 1024 * 1024):
        self.target = target
        self.timeout = timeout
        options = [
            ("grpc.service_config", _SERVICE_CONFIG),
            ("grpc.enable_retries", 1),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ]
        if tls is None:
            self._channel = grpc.insecure_channel(target, options=options)
        else:
            if tls.server_name:
                options.append(("grpc.ssl_target_name_override", tls.server_name))
            creds = grpc.ssl_channel_credentials(tls.root_certificates, tls.client_key, tls.client_cert)
            self._channel = grpc.secure_channel(target, creds, options=options)
        self._metadata = ((TRANSPORT_HEADER, Transport.Name(transport).removeprefix("TRANSPORT_").lower()),)
        self._admin_metadata = self._metadata + (
            (("authorization", f"Bearer {admin_token}"),) if admin_token else ())
        self._inference = inference_pb2_grpc.InferenceServiceStub(self._channel)
        self._admin = admin_pb2_grpc.ModelAdminServiceStub(self._channel)
        self._analytics = analytics_pb2_grpc.AnalyticsServiceStub(self._channel)

    # -- lifecycle -------------------------------------------------------------------------------------------
    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> PredmeshClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Block until the channel connects, or raise Unavailable."""
        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            from predmesh.errors import Unavailable
            raise Unavailable(f"no connection to {self.target} within {timeout:g}s") from None

    def _call(self, method, request, timeout: float | None, metadata=None):
        try:
            return method(request, timeout=self.timeout if timeout is None else timeout,
                          metadata=metadata or self._metadata)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None

    # -- inference -------------------------------------------------------------------------------------------
    def predict(self, model: str, features: Mapping[str, float], *, request_id: str = "",
                timeout: float | None = None) -> model_pb2.Prediction:
        """Score one row of named features."""
        request = inference_pb2.PredictRequest(model=model, features=features, request_id=request_id)
        return self._call(self._inference.Predict, request, timeout).prediction

    def predict_batch(self, model: str, rows: Sequence[Mapping[str, float] | tuple[Mapping[str, float], str]], *,
                      timeout: float | None = None) -> list[model_pb2.Prediction]:
        """Score many rows; a row is a features mapping or a (features, request_id) pair."""
        request = inference_pb2.PredictBatchRequest(model=model, rows=[_row(r) for r in rows])
        return list(self._call(self._inference.PredictBatch, request, timeout).predictions)

    def predict_stream(self, model: str, rows: Iterable[Mapping[str, float] | tuple[Mapping[str, float], str]], *,
                       timeout: float | None = None) -> Iterator[inference_pb2.PredictStreamResponse]:
        """Stream rows and yield one answer per row (a prediction or that row's error), in order.

        The timeout bounds the whole stream. Rows without a request_id get a fresh one so answers can be matched.
        """
        def requests():
            for r in rows:
                row = _row(r)
                yield inference_pb2.PredictStreamRequest(model=model, features=row.features,
                                                         request_id=row.request_id or str(uuid.uuid4()))
        try:
            yield from self._inference.PredictStream(
                requests(), timeout=self.timeout if timeout is None else timeout, metadata=self._metadata)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None

    def list_models(self, *, timeout: float | None = None) -> list[model_pb2.ModelInfo]:
        return list(self._call(self._inference.ListModels, inference_pb2.ListModelsRequest(), timeout).models)

    def get_model(self, model: str, *, timeout: float | None = None) -> model_pb2.ModelInfo:
        return self._call(self._inference.GetModel, inference_pb2.GetModelRequest(model=model), timeout).model

    # -- admin -----------------------------------------------------------------------------------------------
    def reload_model(self, model: str, version: str = "", *,
                     timeout: float | None = None) -> admin_pb2.ReloadModelResponse:
        """Roll a model to a stored version (newest when empty). Needs the admin token."""
        request = admin_pb2.ReloadModelRequest(model=model, version=version)
        return self._call(self._admin.ReloadModel, request, timeout, self._admin_metadata)

    def list_model_versions(self, model: str, *, timeout: float | None = None) -> list[model_pb2.ModelInfo]:
        request = admin_pb2.ListModelVersionsRequest(model=model)
        return list(self._call(self._admin.ListModelVersions, request, timeout, self._admin_metadata).versions)

    # -- analytics -------------------------------------------------------------------------------------------
    def list_predictions(self, *, timeout: float | None = None,
                         **filters) -> analytics_pb2.ListPredictionsResponse:
        """One page of stored predictions; filters are ListPredictionsRequest fields."""
        request = analytics_pb2.ListPredictionsRequest(**filters)
        return self._call(self._analytics.ListPredictions, request, timeout)

    def get_stats(self, *, timeout: float | None = None, **window) -> analytics_pb2.GetStatsResponse:
        """Aggregates; window fields are GetStatsRequest fields (model, start_time, end_time)."""
        return self._call(self._analytics.GetStats, analytics_pb2.GetStatsRequest(**window), timeout)

    def submit_feedback(self, prediction_id: str, label: str, *,
                        timeout: float | None = None) -> analytics_pb2.SubmitFeedbackResponse:
        request = analytics_pb2.SubmitFeedbackRequest(prediction_id=prediction_id, label=label)
        return self._call(self._analytics.SubmitFeedback, request, timeout)


def _row(row) -> inference_pb2.FeatureRow:
    if isinstance(row, tuple):
        features, request_id = row
        return inference_pb2.FeatureRow(features=features, request_id=request_id)
    return inference_pb2.FeatureRow(features=row)
