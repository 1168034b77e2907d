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
    """One input feature with the range and distribution observed in training."""

    name: str
    min: float
    max: float
    mean: float = 0.0
    std: float = 0.0
    # The 10th..90th percentiles of the training data (9 increasing edges); empty for older manifests.
    quantiles: tuple[float, ...] = ()
    # The share of the training rows in each of the len(quantiles) + 1 bins (bin i: quantiles[i-1] < v <=
    # quantiles[i]); not 0.1 each when values tie (drift, inference/models/drift.py); empty for older manifests.
    shares: tuple[float, ...] = ()

    def to_json(self) -> dict:
        data = {"name": self.name, "min": self.min, "max": self.max, "mean": self.mean, "std": self.std,
                "quantiles": list(self.quantiles)}
        if self.shares:
            data["shares"] = list(self.shares)
        return data

    @classmethod
    def from_json(cls, data: dict) -> Feature:
        return cls(str(data["name"]), float(data["min"]), float(data["max"]), float(data.get("mean", 0.0)),
                   float(data.get("std", 0.0)), tuple(float(q) for q in data.get("quantiles", ())),
                   tuple(float(s) for s in data.get("shares", ())))


@dataclass(frozen=True)
class ClassProfile:
    """The training rows of one class: their share and per-feature mean and std (schema order)."""

    label: str
    share: float
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def to_json(self) -> dict:
        return {"label": self.label, "share": self.share, "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_json(cls, data: dict) -> ClassProfile:
        return cls(str(data["label"]), float(data["share"]), tuple(float(v) for v in data["mean"]),
                   tuple(float(v) for v in data["std"]))


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
    # Class-conditional training distribution, one per class in classes order; empty for older manifests.
    class_profiles: tuple[ClassProfile, ...] = field(default=())

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    def to_json(self) -> dict:
        return {
            "name": self.name, "version": self.version,
            "features": [f.to_json() for f in self.features],
            "classes": list(self.classes), "sha256": self.sha256, "metrics": self.metrics,
            "created_at": self.created_at.isoformat(), "sklearn_version": self.sklearn_version,
            "estimator": self.estimator, "golden": list(self.golden),
            "class_profiles": [c.to_json() for c in self.class_profiles],
        }

    @classmethod
    def from_json(cls, data: dict) -> Manifest:
        try:
            return cls(
                name=str(data["name"]), version=str(data["version"]),
                features=tuple(Feature.from_json(f) for f in data["features"]),
                classes=tuple(str(c) for c in data["classes"]), sha256=str(data["sha256"]),
                metrics={str(k): float(v) for k, v in data.get("metrics", {}).items()},
                created_at=datetime.fromisoformat(data["created_at"]),
                sklearn_version=str(data.get("sklearn_version", "")), estimator=str(data.get("estimator", "")),
                golden=tuple(data.get("golden", ())),
                class_profiles=tuple(ClassProfile.from_json(c) for c in data.get("class_profiles", ())),
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
