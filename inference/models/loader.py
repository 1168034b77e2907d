"""The one place that turns stored bytes into an estimator: path containment, hash check, skops trusted types."""
from __future__ import annotations

import hashlib
import io
import os
import zipfile
from pathlib import Path
from types import ModuleType

from inference.bounds import check_name, shown
from inference.errors import ModelNotFound, UntrustedArtifact
from inference.models import skops_defaults
from inference.models.manifest import ARTIFACT, MANIFEST, Manifest, decode

__all__ = ["contained", "dump_estimator", "load_estimator", "read_manifest", "version_dir"]
MAX_ARTIFACT_BYTES = 512 * 1024 * 1024
MAX_MANIFEST_BYTES = 64 * 1024 * 1024  # a wide model's manifest (categories, golden rows) is a few MB


def _skops_io() -> ModuleType:
    """skops.io, imported on first use with its default trusted types from the stored lists (skops_defaults).
    Here rather than at the top: skops.io imports scikit-learn (~1.3 CPU s), which the paths and manifests above
    never need, so a process that only lists the store (the supervisor of PREDMESH_PROCESSES > 1) skips it."""
    skops_defaults.install()  # before skops.io's first import, or it computes its lists itself
    import skops.io
    return skops.io


def contained(root: Path, *parts: str) -> Path:
    """root/parts resolved (symlinks followed); refuses anything that ends up outside root."""
    base = Path(os.path.realpath(root))
    target = Path(os.path.realpath(base.joinpath(*parts)))
    if target != base and base not in target.parents:
        raise UntrustedArtifact(f"{'/'.join(parts)!r} resolves outside the model store")
    return target


def version_dir(root: Path, model: str, version: str) -> Path:
    """The directory of a stored version; raises ModelNotFound if it is absent."""
    path = contained(root, check_name("model", model), check_name("version", version))
    if not path.is_dir():
        raise ModelNotFound(f"model {shown(model)} has no version {shown(version)} in the model store")
    return path


def read_manifest(path: Path, signing_key: bytes | None) -> Manifest:
    """The verified manifest of a version directory."""
    try:
        manifest = contained(path, MANIFEST)
        if manifest.stat().st_size > MAX_MANIFEST_BYTES:  # read whole: a sparse 100 GB file costs no disk
            raise UntrustedArtifact(f"{MANIFEST} is larger than {MAX_MANIFEST_BYTES} bytes")
        raw = manifest.read_bytes()
    except OSError as exc:
        raise UntrustedArtifact(f"cannot read {MANIFEST}: {exc.strerror}") from None
    return decode(raw, signing_key)


def load_estimator(path: Path, manifest: Manifest):
    """Read the artifact, check its SHA-256 against the manifest and its types against the allowlist, then load.

    Nothing is deserialised unless the hash matches and every type is trusted, and nothing that compiled code
    follows by index (trees, boosting predictors, support vectors, neighbour indexes) is returned before its
    structure is checked or rebuilt (inference/models/structure.py).
    """
    artifact = contained(path, ARTIFACT)
    try:
        if artifact.stat().st_size > MAX_ARTIFACT_BYTES:
            raise UntrustedArtifact(f"{ARTIFACT} is larger than {MAX_ARTIFACT_BYTES} bytes")
        data = artifact.read_bytes()
    except OSError as exc:
        raise UntrustedArtifact(f"cannot read {ARTIFACT}: {exc.strerror}") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != manifest.sha256:
        raise UntrustedArtifact(f"{ARTIFACT} SHA-256 {digest[:12]}… does not match the manifest's "
                                f"{manifest.sha256[:12]}…")
    _check_unpacked_size(data)
    from inference.models.structure import TRUSTED_TYPES, check_structure
    sio = _skops_io()
    try:
        untrusted = set(sio.get_untrusted_types(data=data))
    except Exception as exc:  # skops raises assorted errors for corrupt archives
        raise UntrustedArtifact(f"{ARTIFACT} is not a readable skops archive: {exc}") from None
    refused = untrusted - TRUSTED_TYPES
    if refused:
        raise UntrustedArtifact(f"{ARTIFACT} contains untrusted types: {', '.join(sorted(refused))}")
    try:
        estimator = sio.loads(data, trusted=sorted(untrusted))
    except Exception as exc:
        raise UntrustedArtifact(f"{ARTIFACT} failed to load: {exc}") from None
    try:
        check_structure(estimator)
    except UntrustedArtifact:
        raise
    except Exception as exc:  # a crafted object missing the attributes a check reads
        raise UntrustedArtifact(f"{ARTIFACT} failed its structure checks: {type(exc).__name__}: {exc}") from None
    return estimator


def _check_unpacked_size(data: bytes) -> None:
    """A skops file is a zip archive, and skops reads its members whole: what they unpack to is bounded like the
    file itself (MAX_ARTIFACT_BYTES), or a few KB of deflated whitespace (a zip bomb) would take gigabytes of memory
    while the loader only looks at it. zipfile never unpacks a member past the size its header declares."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
    except Exception as exc:  # zipfile raises assorted errors for corrupt archives
        raise UntrustedArtifact(f"{ARTIFACT} is not a readable skops archive: {exc}") from None
    if unpacked > MAX_ARTIFACT_BYTES:
        raise UntrustedArtifact(f"{ARTIFACT} unpacks to {unpacked} bytes, more than {MAX_ARTIFACT_BYTES}")


def dump_estimator(estimator) -> bytes:
    """Serialise an estimator in the safe format the loader accepts."""
    return _skops_io().dumps(estimator)
