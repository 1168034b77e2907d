"""The per-version manifest (metadata.json): schema, classes, metrics, artifact SHA-256, optional HMAC signature."""
from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass, field
from datetime import datetime

from inference.errors import UntrustedArtifact

MANIFEST = "metadata.json"
ARTIFACT = "model.skops"


@dataclass(frozen=True)
class Feature:
    """One input feature with the range observed in training."""

    name: str
    min: float
    max: float


@dataclass(frozen=True)
class Manifest:
    """What a stored version claims to be; verified against the artifact before it serves."""

    name: str
    version: str
    features: tuple[Feature, ...]
    classes: tuple[str, ...]
    sha256: str
    metrics: dict[str, float]
    created_at: datetime
    sklearn_version: str
    estimator: str
    # Golden rows: inputs with the label (and probabilities) the artifact gave at training time.
    golden: tuple[dict, ...] = field(default=())

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    def to_json(self) -> dict:
        return {
            "name": self.name, "version": self.version,
            "features": [{"name": f.name, "min": f.min, "max": f.max} for f in self.features],
            "classes": list(self.classes), "sha256": self.sha256, "metrics": self.metrics,
            "created_at": self.created_at.isoformat(), "sklearn_version": self.sklearn_version,
            "estimator": self.estimator, "golden": list(self.golden),
        }

    @classmethod
    def from_json(cls, data: dict) -> Manifest:
        try:
            return cls(
                name=str(data["name"]), version=str(data["version"]),
                features=tuple(Feature(str(f["name"]), float(f["min"]), float(f["max"])) for f in data["features"]),
                classes=tuple(str(c) for c in data["classes"]), sha256=str(data["sha256"]),
                metrics={str(k): float(v) for k, v in data.get("metrics", {}).items()},
                created_at=datetime.fromisoformat(data["created_at"]),
                sklearn_version=str(data.get("sklearn_version", "")), estimator=str(data.get("estimator", "")),
                golden=tuple(data.get("golden", ())),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise UntrustedArtifact(f"manifest is malformed: {exc!r}") from None


def _canonical(data: dict) -> bytes:
    return json.dumps({k: v for k, v in data.items() if k != "signature"}, sort_keys=True,
                      separators=(",", ":")).encode()


def sign(data: dict, key: bytes) -> str:
    """HMAC-SHA256 of the manifest without its signature field."""
    return hmac.new(key, _canonical(data), hashlib.sha256).hexdigest()


def encode(manifest: Manifest, signing_key: bytes | None) -> bytes:
    """Serialise a manifest, signed when a key is given."""
    data = manifest.to_json()
    if signing_key:
        data["signature"] = sign(data, signing_key)
    return json.dumps(data, indent=2, sort_keys=True).encode()


def decode(raw: bytes, signing_key: bytes | None) -> Manifest:
    """Parse and, when a signing key is configured, verify a manifest; refuse unsigned or forged ones."""
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UntrustedArtifact(f"manifest is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise UntrustedArtifact("manifest is not a JSON object")
    if signing_key:
        signature = data.get("signature")
        if not isinstance(signature, str) or not hmac.compare_digest(signature, sign(data, signing_key)):
            raise UntrustedArtifact("manifest signature is missing or does not verify")
    return Manifest.from_json(data)
