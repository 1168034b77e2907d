"""Typed readers for PREDMESH_* environment variables, used by every entry point's settings."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path


class ConfigError(ValueError):
    """A PREDMESH_* variable has a value that cannot be used."""


class Env:
    """Reads PREDMESH_<NAME> from a mapping (os.environ in entry points, a dict in tests)."""

    def __init__(self, environ: Mapping[str, str], prefix: str = "PREDMESH_"):
        self._environ = environ
        self._prefix = prefix

    def str(self, name: str, default: str) -> str:
        return self._environ.get(self._prefix + name, default)

    def int(self, name: str, default: int, minimum: int | None = None) -> int:
        raw = self._environ.get(self._prefix + name)
        try:
            value = default if raw in (None, "") else int(raw)
        except ValueError:
            raise ConfigError(f"{self._prefix}{name}={raw!r} is not an integer") from None
        if minimum is not None and value < minimum:
            raise ConfigError(f"{self._prefix}{name}={value} must be >= {minimum}")
        return value

    def float(self, name: str, default: float) -> float:
        raw = self._environ.get(self._prefix + name)
        try:
            return default if raw in (None, "") else float(raw)
        except ValueError:
            raise ConfigError(f"{self._prefix}{name}={raw!r} is not a number") from None

    def bool(self, name: str, default: bool) -> bool:
        raw = self._environ.get(self._prefix + name)
        if raw in (None, ""):
            return default
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{self._prefix}{name}={raw!r} is not a boolean")

    def path(self, name: str, default: str) -> Path:
        return Path(self.str(name, default))

    def secret(self, name: str) -> str | None:
        """PREDMESH_<NAME>, or the stripped contents of the file named by PREDMESH_<NAME>_FILE."""
        value = self._environ.get(self._prefix + name)
        if value:
            return value
        file = self._environ.get(self._prefix + name + "_FILE")
        if file:
            try:
                return Path(file).read_text().strip() or None
            except OSError as exc:
                raise ConfigError(f"{self._prefix}{name}_FILE: cannot read {file}: {exc.strerror}") from None
        return None
