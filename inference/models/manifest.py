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
    # What a value is: "number" (a float; min..shares describe it), "category" (a string) or "boolean" (true or
    # false; mean is the share of true). Older manifests: "number".
    kind: str = "number"
    # A category or boolean feature's training values, most common first, with their shares of the training rows
    # that had a value (a boolean's values are "false" and "true").
    categories: tuple[tuple[str, float], ...] = ()
    # Share of the training rows in which the feature was missing.
    missing_share: float = 0.0
    # Whether a missing value is accepted (the model imputes or handles it); otherwise refused at the edge.
    nullable: bool = False
    # Whether a category not seen in training is scored (the model handles unknowns; counted) or refused.
    accepts_unknown: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"feature {self.name!r} has kind {self.kind!r}; expected one of {', '.join(KINDS)}")

    @property
    def category_names(self) -> tuple[str, ...]:
        return tuple(value for value, _ in self.categories)

    def to_json(self) -> dict:
        data: dict = {"name": self.name, "min": self.min, "max": self.max, "mean": self.mean, "std": self.std,
                      "quantiles": list(self.quantiles)}
        if self.shares:
            data["shares"] = list(self.shares)
        if self.kind != "number":
            data["kind"] = self.kind
        if self.categories:
            data["categories"] = [[value, share] for value, share in self.categories]
        if self.missing_share:
            data["missing_share"] = self.missing_share
        if self.nullable:
            data["nullable"] = True
        if self.accepts_unknown:
            data["accepts_unknown"] = True
        return data

    @classmethod
    def from_json(cls, data: dict) -> Feature:
        return cls(str(data["name"]), float(data["min"]), float(data["max"]), float(data.get("mean", 0.0)),
                   float(data.get("std", 0.0)), tuple(float(q) for q in data.get("quantiles", ())),
                   tuple(float(s) for s in data.get("shares", ())), kind=str(data.get("kind", "number")),
                   categories=tuple((str(v), float(s)) for v, s in data.get("categories", ())),
                   missing_share=float(data.get("missing_share", 0.0)), nullable=bool(data.get("nullable", False)),
                   accepts_unknown=bool(data.get("accepts_unknown", False)))


KINDS = ("number", "category", "boolean")
# How the estimator takes its input: "array", a float64 matrix in schema order (the native kernels' input; every
# feature a number); "frame", a pandas DataFrame with the features as named columns (numbers float64, categories
# and booleans object columns of str / bool), a missing value NaN. Older manifests: "array".
INPUTS = ("array", "frame")


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
    # How the estimator takes its input (INPUTS): "array" or "frame".
    input: str = "array"

    def __post_init__(self) -> None:
        if self.input not in INPUTS:
            raise ValueError(f"manifest input {self.input!r}; expected one of {', '.join(INPUTS)}")
        if self.input == "array" and any(f.kind != "number" for f in self.features):
            raise ValueError("a model with categorical or boolean features takes a frame, not an array")

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
            **({"input": self.input} if self.input != "array" else {}),
        }

    @classmethod
    def from_json(cls, data: dict) -> Manifest:
        try:
            manifest = cls(
                name=str(data["name"]), version=str(data["version"]),
                features=tuple(Feature.from_json(f) for f in data["features"]),
                classes=tuple(str(c) for c in data["classes"]), sha256=str(data["sha256"]),
                metrics={str(k): float(v) for k, v in data.get("metrics", {}).items()},
                created_at=datetime.fromisoformat(data["created_at"]),
                sklearn_version=str(data.get("sklearn_version", "")), estimator=str(data.get("estimator", "")),
                golden=tuple(data.get("golden", ())),
                class_profiles=tuple(ClassProfile.from_json(c) for c in data.get("class_profiles", ())),
                input=str(data.get("input", "array")),
            )
            manifest.created_at.utctimetuple()  # a date a Timestamp cannot hold (year 1 at +01:00) never serves
            return manifest
        # AttributeError: a list where an object belongs; ArithmeticError: an integer too large for a float or a
        # date outside 0001..9999 in UTC. Any of them would otherwise surface later, as INTERNAL on every call
        # that describes the model (ListModels, GetModel, ListModelVersions).
        except (KeyError, TypeError, ValueError, AttributeError, ArithmeticError) as exc:
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
    except (ValueError, RecursionError) as exc:  # not UTF-8 or JSON, an integer over 4300 digits, deep nesting
        raise UntrustedArtifact(f"manifest is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise UntrustedArtifact("manifest is not a JSON object")
    try:  # JSON may escape a lone surrogate ("\\ud800"), which no protobuf string (ModelInfo) can carry
        json.dumps(data, ensure_ascii=False).encode()
    except (UnicodeEncodeError, RecursionError) as exc:
        raise UntrustedArtifact(f"manifest has text that is not valid Unicode: {exc}") from None
    if signing_key:
        signature = data.get("signature")
        # as bytes: compare_digest raises TypeError for a str with non-ASCII characters (a forged "é")
        if not isinstance(signature, str) or not hmac.compare_digest(signature.encode(),
                                                                     sign(data, signing_key).encode()):
            raise UntrustedArtifact("manifest signature is missing or does not verify")
    return Manifest.from_json(data)
