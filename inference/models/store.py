"""The model store: <root>/<model>/<version>/{model.skops, metadata.json}; versions are immutable integers."""
from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import replace
from pathlib import Path

from inference.bounds import check_name, shown
from inference.errors import InvalidArgument, ModelNotFound, UntrustedArtifact
from inference.models.loader import contained, read_manifest
from inference.models.manifest import ARTIFACT, MANIFEST, Manifest, encode

log = logging.getLogger(__name__)


class ModelStore:
    """Lists, reads and writes stored versions under one root directory."""

    def __init__(self, root: Path, signing_key: bytes | None = None):
        self.root = Path(root)
        self.signing_key = signing_key

    def models(self) -> list[str]:
        """Model names that have at least one version. Anything else in the root (a file, lost+found, a name
        that is not a model name, a symlink leading outside the store, an unreadable directory) is logged and
        skipped: it never stops a start."""
        try:
            entries = sorted(self.root.iterdir()) if self.root.is_dir() else []
        except OSError as exc:
            log.error("model store %s cannot be listed: %s", self.root, exc)
            return []
        names = []
        for path in entries:
            if path.name.startswith("."):
                continue
            try:
                check_name("model", path.name)
                if not contained(self.root, path.name).is_dir():
                    raise InvalidArgument("not a directory")
                if self.versions(path.name):
                    names.append(path.name)
            except (InvalidArgument, UntrustedArtifact, OSError) as exc:
                log.warning("model store: skipping %s (%s)", shown(path.name), exc)
        return names

    def versions(self, model: str) -> list[str]:
        """Stored versions of a model, newest first; a version directory that resolves outside the store (a
        symlink) is never listed."""
        try:
            path = contained(self.root, check_name("model", model))
        except UntrustedArtifact:
            log.warning("model store: %s resolves outside the store: not listed", shown(model))
            return []
        if not path.is_dir():
            return []
        found = []
        for entry in path.iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if (contained(self.root, model, entry.name) / MANIFEST).exists():
                    found.append(entry.name)
            except UntrustedArtifact:
                log.warning("model store: skipping %s/%s: it resolves outside the store", model, entry.name)
        return sorted(found, key=int, reverse=True)

    def newest(self, model: str) -> str:
        versions = self.versions(model)
        if not versions:
            raise ModelNotFound(f"model {shown(model)} has no versions in the model store")
        return versions[0]

    def manifests(self, model: str) -> list[Manifest]:
        """Verified manifests of every readable version, newest first (unreadable ones are skipped)."""
        out = []
        for version in self.versions(model):
            try:
                out.append(read_manifest(self.root / model / version, self.signing_key))
            except UntrustedArtifact:
                continue
        return out

    def write(self, manifest: Manifest, artifact: bytes) -> Manifest:
        """Store a new version atomically (temp dir, fsync, rename) and return its manifest with the version set."""
        model_dir = contained(self.root, check_name("model", manifest.name))
        model_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".incoming-", dir=model_dir))
        _write_synced(tmp / ARTIFACT, artifact)
        while True:
            existing = [int(v) for v in self.versions(manifest.name)]
            version = str(max(existing, default=0) + 1)
            stamped = replace(manifest, version=version)
            _write_synced(tmp / MANIFEST, encode(stamped, self.signing_key))
            try:
                os.rename(tmp, model_dir / version)  # fails if another writer took this number
            except OSError:
                continue
            _fsync_dir(model_dir)
            return stamped


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
