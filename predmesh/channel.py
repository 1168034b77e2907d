"""What both clients share about a channel: options, retry policy, TLS credentials and call metadata."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass

import grpc

from predmesh.errors import BadArgument
from predmesh.types import TRANSPORTS, transport_name, transport_value

TRANSPORT_HEADER = "x-predmesh-transport"
# trailing metadata of ListModels (and OIP ServerMetadata): the pid of the server process that answered, so a client
# can tell apart the processes sharing one port (SO_REUSEPORT) its connections reached
PID_HEADER = "predmesh-pid"
STUBS = ("inference", "admin", "analytics", "health")

# Retries only where a request cannot have been processed twice in a harmful way: UNAVAILABLE (connection
# refused, server draining). Predict is idempotent on request_id, so a retry never stores a second row.
SERVICE_CONFIG = json.dumps({
    "methodConfig": [{
        "name": [{"service": "predmesh.v1.InferenceService"}, {"service": "predmesh.v1.AnalyticsService"},
                 {"service": "predmesh.v1.ModelAdminService"}, {"service": "grpc.health.v1.Health"}],
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


def call_timeout(timeout: float | None, default: float | None) -> float | None:
    """The seconds a call may take: its own timeout, else the client's (None: no deadline). BadArgument for one that
    is not a finite number: gRPC takes inf or NaN for a deadline already past, and a str fails deep inside it."""
    seconds: object = default if timeout is None else timeout  # any object: a caller may pass anything
    if seconds is None:
        return None
    if not isinstance(seconds, int | float) or not math.isfinite(seconds):
        raise BadArgument(f"timeout is {seconds!r}; send a finite number of seconds")
    return seconds


def check_token(name: str, token: str | None) -> None:
    """BadArgument for a token that a header cannot carry (gRPC would fail every call carrying it with INTERNAL
    "Invalid metadata", as if the server had failed): printable ASCII only."""
    for i, char in enumerate(token or ""):
        if not " " <= char <= "~":
            hint = " (a token read from a file: strip its newline)" if char in "\r\n" else ""
            raise BadArgument(f"{name} has {char!r} at position {i}; a token is sent in a header, which takes "
                              f"printable ASCII only{hint}")


def check_tls(tls: TlsConfig | None) -> None:
    """BadArgument for TLS settings gRPC cannot use: a certificate or key given as other than PEM bytes (a path), or
    a client certificate without its key (or the key alone), on which gRPC's core aborts the whole process."""
    if tls is None:
        return
    for name in ("root_certificates", "client_cert", "client_key"):
        value = getattr(tls, name)
        if value is not None and not isinstance(value, bytes):
            raise BadArgument(f"TlsConfig.{name} is {type(value).__name__}; pass the PEM bytes, e.g. "
                              "Path(...).read_bytes()")
    if bool(tls.client_cert) != bool(tls.client_key):
        given, missing = ("client_cert", "client_key") if tls.client_cert else ("client_key", "client_cert")
        raise BadArgument(f"TlsConfig has a {given} without a {missing}; a client certificate (mTLS) needs both")


@dataclass(frozen=True)
class TlsConfig:
    """PEM bytes for a TLS channel; client_cert and client_key together enable mTLS."""

    root_certificates: bytes | None = None
    client_cert: bytes | None = None
    client_key: bytes | None = None
    server_name: str | None = None


@dataclass(frozen=True)
class ChannelSpec:
    """How to open the channel and what every call sends; built once from the client's arguments."""

    target: str
    options: tuple[tuple[str, object], ...]
    metadata: tuple[tuple[str, str], ...]
    admin_metadata: tuple[tuple[str, str], ...]
    writer_metadata: tuple[tuple[str, str], ...]
    tls: TlsConfig | None

    @classmethod
    def build(cls, target: str, *, transport: str, admin_token: str | None, tls: TlsConfig | None,
              max_message_bytes: int, writer_token: str | None = None, own_connection: bool = False) -> ChannelSpec:
        transport = transport_name(transport_value(transport)) if transport else transport  # "REST" → "rest"
        if transport not in TRANSPORTS:
            raise BadArgument(f"transport {transport!r} is not one of {', '.join(TRANSPORTS)}")
        options: list[tuple[str, object]] = [
            ("grpc.service_config", SERVICE_CONFIG),
            ("grpc.enable_retries", 1),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ]
        if own_connection:  # a subchannel pool of the channel's own: gRPC does not share its connection
            options.append(("grpc.use_local_subchannel_pool", 1))
        if tls is not None and tls.server_name:
            options.append(("grpc.ssl_target_name_override", tls.server_name))
        check_tls(tls)
        check_token("admin_token", admin_token)
        check_token("writer_token", writer_token)
        metadata = ((TRANSPORT_HEADER, transport),)
        admin = metadata + ((("authorization", f"Bearer {admin_token}"),) if admin_token else ())
        writer_token = writer_token or admin_token  # the admin token may write too
        writer = metadata + ((("authorization", f"Bearer {writer_token}"),) if writer_token else ())
        return cls(target, tuple(options), metadata, admin, writer, tls)

    def credentials(self) -> grpc.ChannelCredentials:
        """TLS channel credentials (for grpc and grpc.aio channels alike)."""
        t = self.tls
        if t is None:
            raise ValueError("credentials() needs a TlsConfig: this channel is plaintext")
        return grpc.ssl_channel_credentials(t.root_certificates, t.client_key, t.client_cert)

    def metadata_for(self, service: str, writes: bool = False) -> tuple[tuple[str, str], ...]:
        """Admin calls carry the admin token; writes of monitoring data the writer token (else the admin token);
        every other call no token."""
        if service == "admin":
            return self.admin_metadata
        return self.writer_metadata if writes else self.metadata
