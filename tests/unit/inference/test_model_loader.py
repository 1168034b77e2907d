"""T20: untrusted artifacts are refused before anything is deserialised; the loader is the only unpickler."""
from __future__ import annotations

import hashlib
import io
import json
import re
import zipfile
from pathlib import Path

import pytest

from inference.errors import InvalidName, ModelNotFound, ReloadFailed, UntrustedArtifact
from inference.metrics import ServerMetrics
from inference.models.loader import load_estimator, read_manifest, version_dir
from inference.models.manifest import decode, encode
from inference.models.registry import ModelRegistry
from inference.models.store import ModelStore
from inference.scoring.convert import model_info
from tests.support import artifacts

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("model, version", [
    ("iris", "../../etc"), ("..", "2"), ("iris", "%2e%2e%2f2"), ("iris", "/etc/passwd"),
    ("http://evil.example/m", "1"), ("iris", "file:///etc/passwd"), ("iris", "https://x/y"), ("iris", ""),
])
def test_paths_outside_the_store_or_urls_are_refused(model_store, model, version):
    # names that cannot exist are the client's mistake (INVALID_ARGUMENT), refused before any path is built
    with pytest.raises(InvalidName):
        version_dir(model_store, model, version)


def test_symlink_escape_is_refused(model_store, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (model_store / "iris" / "7").symlink_to(outside)
    with pytest.raises(UntrustedArtifact, match="outside the model store"):
        version_dir(model_store, "iris", "7")


def test_missing_version_is_not_found(model_store):
    with pytest.raises(ModelNotFound):
        version_dir(model_store, "iris", "99")


def test_canary_pickle_is_never_unpickled(model_store, tmp_path):
    marker = tmp_path / "PWNED"
    path = artifacts.canary_pickle(model_store, "iris", "2", "9", marker)
    with pytest.raises(UntrustedArtifact):
        load_estimator(path, read_manifest(path, None))
    assert not marker.exists(), "the booby-trapped pickle was executed"


def test_canary_pickle_via_reload_is_refused(model_store, tmp_path):
    marker = tmp_path / "PWNED"
    artifacts.canary_pickle(model_store, "iris", "2", "9", marker)
    registry = _registry(model_store)
    with pytest.raises(ReloadFailed):
        registry.reload("iris", "9")
    assert not marker.exists()
    assert registry.get("iris").version == "2"


def test_hash_not_in_manifest_is_refused(model_store):
    path = artifacts.hash_mismatch(model_store, "iris", "2", "1", "9")
    with pytest.raises(UntrustedArtifact, match="does not match the manifest"):
        load_estimator(path, read_manifest(path, None))


def test_untrusted_skops_types_are_refused(model_store):
    path = artifacts.untrusted_types(model_store, "iris", "2", "9")
    with pytest.raises(UntrustedArtifact, match="untrusted types"):
        load_estimator(path, read_manifest(path, None))


def test_signed_manifests_verify_and_forgeries_fail(model_store):
    key = b"k" * 32
    manifest = read_manifest(model_store / "iris" / "2", None)
    signed = encode(manifest, key)
    assert decode(signed, key) == manifest
    with pytest.raises(UntrustedArtifact, match="signature"):
        decode(signed.replace(manifest.sha256.encode(), b"0" * 64), key)
    with pytest.raises(UntrustedArtifact, match="signature"):
        decode(encode(manifest, None), key)
    forged = json.loads(signed)
    forged["signature"] = "é" * 64  # compare_digest raised TypeError: ListModelVersions answered INTERNAL
    with pytest.raises(UntrustedArtifact, match="signature"):
        decode(json.dumps(forged).encode(), key)


def test_no_deserialiser_outside_the_loader():
    """CI grep: pickle/joblib/cloudpickle loading appears only in inference/models/loader.py, and in
    inference/models/importer.py, where `predmesh import --trust-pickle` converts a file the user trusts to skops
    in the import process (the server never imports it: tests/unit/inference/test_import.py)."""
    pattern = re.compile(r"\b(pickle\.loads?|joblib\.load|cloudpickle|dill\.loads?|skops\.io\.loads?|sio\.loads?)\b")
    offenders = []
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT)
        if rel.parts[0] in (".venv", "tests", "bench", "build", "var") or rel in (
                Path("inference/models/loader.py"), Path("inference/models/importer.py")):
            continue
        if pattern.search(path.read_text(errors="replace")):
            offenders.append(str(rel))
    assert offenders == []


def _registry(root):
    from prometheus_client import CollectorRegistry
    registry = ModelRegistry(ModelStore(root), ServerMetrics(CollectorRegistry()))
    registry.load_all()
    return registry


HOSTILE_MANIFESTS = {
    "a list for the metrics": lambda m: m.update(metrics=[]),
    "an integer too large for a float": lambda m: m.update(metrics={"accuracy": 10 ** 400}),
    "a date outside 0001..9999 in UTC": lambda m: m.update(created_at="0001-01-01T00:00:00+01:00"),
    "a lone surrogate in a metric name": lambda m: m.update(metrics={"\ud800": 1.0}),
    "a lone surrogate in the estimator": lambda m: m.update(estimator="Logistic\udfffRegression"),
}


def _hostile(store: Path, mutate) -> Path:
    path = artifacts.clone_version(store, "iris", "2", "9")
    manifest = json.loads((path / "metadata.json").read_text())
    mutate(manifest)
    (path / "metadata.json").write_text(json.dumps(manifest))  # ensure_ascii: a surrogate is written as \ud800
    return path


@pytest.mark.parametrize("mutate", HOSTILE_MANIFESTS.values(), ids=HOSTILE_MANIFESTS.keys())
def test_a_hostile_manifest_is_refused_and_never_breaks_model_info(model_store, mutate):
    # Each of these once loaded (or failed with an unexpected exception): a version that served this way made
    # ListModels and GetModel INTERNAL for every client, and one such version in the store made ListModelVersions
    # INTERNAL for the whole model.
    path = _hostile(model_store, mutate)
    with pytest.raises(UntrustedArtifact, match="manifest"):
        read_manifest(path, None)
    registry = _registry(model_store)  # start-up: skips it, serves the newest loadable version
    assert registry.get("iris").version == "2"
    with pytest.raises(ReloadFailed, match="manifest"):
        registry.reload("iris", "9")
    assert [m.version for m in ModelStore(model_store).manifests("iris")] == ["2", "1"]
    for model in registry.serving():
        model_info(model.manifest, True)


@pytest.mark.parametrize("raw", [b'{"a": ' + b"1" * 5000 + b"}", b"[" * 100_000 + b"]" * 100_000, b"\xff{}"],
                         ids=["an integer over 4300 digits", "deep nesting", "not UTF-8"])
def test_manifest_bytes_json_cannot_hold_are_refused(raw):
    with pytest.raises(UntrustedArtifact, match="not valid JSON"):
        decode(raw, None)


def test_a_zip_bomb_is_refused_before_skops_unpacks_it(model_store, monkeypatch):
    # 1 MB of deflated whitespace in schema.json took 2 GB of memory and 10 s while skops read it to list its types
    # (the size limit counted the file, not what it unpacks to); a few MB more and the server was killed at start
    from inference.models import loader

    path = artifacts.clone_version(model_store, "iris", "2", "9")
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as bomb:
        bomb.writestr("schema.json", "{}" + " " * (8 << 20))
    data = archive.getvalue()
    assert len(data) < 64 << 10
    (path / "model.skops").write_bytes(data)
    manifest = json.loads((path / "metadata.json").read_text())
    manifest["sha256"] = hashlib.sha256(data).hexdigest()
    (path / "metadata.json").write_text(json.dumps(manifest))
    monkeypatch.setattr(loader, "MAX_ARTIFACT_BYTES", 4 << 20)
    monkeypatch.setattr(loader, "_skops_io", lambda: pytest.fail("skops was handed the zip bomb"))
    with pytest.raises(UntrustedArtifact, match=r"unpacks to 8388610 bytes, more than 4194304"):
        load_estimator(path, read_manifest(path, None))


def test_an_oversized_manifest_is_refused_without_reading_it(model_store, monkeypatch):
    # metadata.json was read whole, whatever its size: a sparse file of any size (no disk used) filled the memory of
    # the server at start, of ListModelVersions and of every process listing the store
    from inference.models import loader

    path = artifacts.clone_version(model_store, "iris", "2", "9")
    with open(path / "metadata.json", "r+b") as manifest:
        manifest.truncate(8 << 20)  # sparse
    monkeypatch.setattr(loader, "MAX_MANIFEST_BYTES", 4 << 20)
    with pytest.raises(UntrustedArtifact, match=r"metadata\.json is larger than 4194304 bytes"):
        read_manifest(path, None)


def test_model_info_lists_the_most_common_categories_of_a_wide_feature():
    # a model imported with a sample of 150,000 product codes: its ModelInfo was 7.5 MB, over gRPC's 4 MiB, so
    # GetModel of it and ListModels of every model answered RESOURCE_EXHAUSTED (HTTP 429 through the gateway)
    from datetime import UTC, datetime

    from inference.models.manifest import Feature, Manifest
    from inference.scoring.convert import MAX_LISTED_CATEGORIES

    codes = tuple((f"sku-{i:08d}-" + "x" * 24, 1 / 150_000) for i in range(150_000))
    manifest = Manifest(name="wide", version="1", features=(Feature("plan", 0.0, 0.0, kind="category",
                                                                    categories=codes, accepts_unknown=True),),
                        classes=("no", "yes"), sha256="0" * 64, metrics={}, created_at=datetime.now(UTC),
                        sklearn_version="", estimator="", input="frame")
    info = model_info(manifest, True)
    assert [c.value for c in info.features[0].categories] == [v for v, _ in codes[:MAX_LISTED_CATEGORIES]]
    assert info.ByteSize() < 256 * 1024
