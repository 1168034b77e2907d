"""A strict variant of the typed fixture (tests/support/typed_model.py) for the refusals: the same pipeline, stored
with `monthly` not nullable and `contract` refusing categories not seen in training."""
from __future__ import annotations

import json
from pathlib import Path

from tests.support.typed_model import write_typed_model


def write_strict_model(store_root: Path, model: str = "strict"):
    """Store the typed pipeline as `model` with monthly not nullable and no unknown contract accepted (an
    unsigned store: the manifest is edited after writing); returns (manifest as written, fitted pipeline)."""
    manifest, pipeline = write_typed_model(store_root, model=model)
    path = store_root / model / manifest.version / "metadata.json"
    data = json.loads(path.read_text())
    for feature in data["features"]:
        if feature["name"] == "monthly":
            feature.pop("nullable", None)
        if feature["name"] == "contract":
            feature.pop("accepts_unknown", None)
    path.write_text(json.dumps(data, indent=2, sort_keys=True))
    return manifest, pipeline
