"""Typed readers for PREDMESH_* environment variables, used by every entry point's settings."""
from __future__ import annotations

import builtins
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

DEFAULT_GRPC_ADDR = "127.0.0.1:50051"  # PREDMESH_GRPC_ADDR's default: the server binds it, the gateway's upstream


class ConfigError(ValueError):
    """A PREDMESH_* variable has a value that cannot be used."""


def split_addr(addr: str) -> tuple[str, int]:
    """'host:port' (IPv6 as '[::1]:port') → (host, port); raises ConfigError on anything else."""
    host, sep, port = addr.rpartition(":")
    if not sep or not host.strip("[]") or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"address {addr!r} must be host:port")
    return host.strip("[]"), int(port)


def redact(url: str) -> str:
    """The URL without its password, for logs, messages and banners (`amqp://u:***@host/`); the rest as given."""
    try:
        password = urlsplit(url).password
    except ValueError:  # not readable as a URL (e.g. a broken IPv6 host): hide whatever stands before an @
        scheme, sep, rest = url.partition("://")
        return f"{scheme}{sep}***@{rest.rpartition('@')[2]}" if "@" in rest else url
    if password:
        return url.replace(f":{password}@", ":***@", 1)
    return url


class Env:
    """Reads PREDMESH_<NAME> from a mapping (os.environ in entry points, a dict in tests)."""

    def __init__(self, environ: Mapping[str, str], prefix: str = "PREDMESH_"):
        self._environ = environ
        self._prefix = prefix

    def str(self, name: str, default: str) -> str:
        return self._environ.get(self._prefix + name, default)

    def int(self, name: builtins.str, default: builtins.int, minimum: builtins.int | None = None,
            maximum: builtins.int | None = None) -> builtins.int:
        raw = self._environ.get(self._prefix + name)
        try:
            value = default if raw in (None, "") else int(raw)
        except ValueError:
            raise ConfigError(f"{self._prefix}{name}={raw!r} is not an integer") from None
        if minimum is not None and value < minimum:
            raise ConfigError(f"{self._prefix}{name}={value} must be >= {minimum}")
        if maximum is not None and value > maximum:
            raise ConfigError(f"{self._prefix}{name}={value} must be <= {maximum}")
        return value

    def float(self, name: builtins.str, default: builtins.float, *, minimum: builtins.float | None = None,
              positive: builtins.bool = False) -> builtins.float:
        """A number; with a bound (minimum, or positive: > 0) also a finite one: a timeout or an interval of -1,
        nan or inf would otherwise reach a sleep, a deadline or Envoy's configuration and fail there, unnamed."""
        raw = self._environ.get(self._prefix + name)
        try:
            value = default if raw in (None, "") else float(raw)
        except ValueError:
            raise ConfigError(f"{self._prefix}{name}={raw!r} is not a number") from None
        if positive and not (math.isfinite(value) and value > 0):
            raise ConfigError(f"{self._prefix}{name}={raw!r} must be a finite number > 0")
        if minimum is not None and not (math.isfinite(value) and value >= minimum):
            raise ConfigError(f"{self._prefix}{name}={raw!r} must be a finite number >= {minimum:g}")
        return value

    def bool(self, name: builtins.str, default: builtins.bool) -> builtins.bool:
        raw = self._environ.get(self._prefix + name)
        if raw in (None, ""):
            return default
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{self._prefix}{name}={raw!r} is not a boolean")

    def path(self, name: builtins.str, default: builtins.str) -> Path:
        return Path(self.str(name, default))

    def choice(self, name: builtins.str, default: builtins.str, choices: tuple[builtins.str, ...]) -> builtins.str:
        """One of choices (compared case-insensitively, returned as listed)."""
        raw = self.str(name, default)
        for choice in choices:
            if raw.lower() == choice.lower():
                return choice
        raise ConfigError(f"{self._prefix}{name}={raw!r}: use one of {', '.join(choices)}")

    def addr(self, name: builtins.str, default: builtins.str, *, optional: builtins.bool = False) -> builtins.str:
        """A host:port address (empty allowed when optional: the part is switched off)."""
        raw = self.str(name, default).strip()
        if optional and not raw:
            return ""
        try:
            split_addr(raw)
        except ConfigError as exc:
            raise ConfigError(f"{self._prefix}{name}: {exc}") from None
        return raw

    def secret(self, name: builtins.str) -> builtins.str | None:
        """PREDMESH_<NAME>, or the contents of the file named by PREDMESH_<NAME>_FILE, stripped of surrounding
        whitespace (a file's or a mounted secret's trailing newline); None when neither is set (or set empty).

        A secret stands for a protection (a token, a password, a signing key) that is off when it is None, so
        what looks like a mistake stops the start instead of switching it off or making it unusable: both
        variables set (which one is meant?), or a value or file that is blank."""
        value = self._environ.get(self._prefix + name)
        file = self._environ.get(self._prefix + name + "_FILE")
        if value and file:
            raise ConfigError(f"both {self._prefix}{name} and {self._prefix}{name}_FILE are set: set one")
        if value:
            if not value.strip():
                raise ConfigError(f"{self._prefix}{name} is blank: set a value, or unset it")
            return value.strip()
        if file:
            try:
                content = Path(file).read_text().strip()
            except OSError as exc:
                raise ConfigError(f"{self._prefix}{name}_FILE: cannot read {file}: {exc.strerror}") from None
            except UnicodeDecodeError:
                raise ConfigError(f"{self._prefix}{name}_FILE: {file} is not UTF-8 text") from None
            if not content:
                raise ConfigError(f"{self._prefix}{name}_FILE: {file} is empty: write the value into it, or "
                                  f"unset {self._prefix}{name}_FILE")
            return content
        return None


class _Recorder(dict[str, str]):
    """An empty environment that notes every variable looked up in it."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def get(self, key: str, default: Any = None) -> Any:
        if key not in self.names:
            self.names.append(key)
        return default


def variables_read(*readers: Callable[[Mapping[str, str]], object],
                   only: tuple[str, ...] | None = None) -> list[str]:
    """The PREDMESH_* variables that settings readers (e.g. ServerSettings.from_env) look up, in order, for
    --help texts: taken from the readers themselves, so the list cannot drift from the code."""
    env = _Recorder()
    for read in readers:
        read(env)
    names = env.names
    # PREDMESH_X and PREDMESH_X_FILE (Env.secret) are shown as PREDMESH_X[_FILE]
    return [n + "[_FILE]" if n + "_FILE" in names else n for n in names
            if not (n.endswith("_FILE") and n[:-len("_FILE")] in names) and (only is None or n in only)]


def env_epilog(names: list[str]) -> str:
    """A --help epilog listing the environment variables a command reads."""
    import textwrap

    return "\n".join(textwrap.wrap("environment: " + ", ".join(names) + " (see docs/configuration.md)",
                                    width=100, break_on_hyphens=False))
