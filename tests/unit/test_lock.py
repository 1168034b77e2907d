"""requirements.lock agrees with pyproject.toml, and the installed environment is the lock's."""
from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements.lock"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")
PROJECT = "predmesh (pyproject.toml)"


def parse_lock(text: str) -> tuple[dict[str, Version], set[str]]:
    """The lock's pins (name → version) and the names it says pyproject.toml asks for directly."""
    pins: dict[str, Version] = {}
    direct: set[str] = set()
    current = None
    for line in text.splitlines():
        match = PIN.match(line)
        if match:
            current = canonicalize_name(match.group(1))
            assert current not in pins, f"{current} is pinned twice"
            pins[current] = Version(match.group(2))
        elif current and line.strip().lstrip("#").strip().removeprefix("via ").strip() == PROJECT:
            direct.add(current)
    return pins, direct


def project_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        lines.extend(extra)
    return [Requirement(line) for line in lines]


def test_lock_parser_reads_pins_and_direct_dependencies():
    pins, direct = parse_lock(
        "a-b==1.2 \\\n    --hash=sha256:00\n    # via predmesh (pyproject.toml)\n"
        "c==3 \\\n    --hash=sha256:11\n    # via\n    #   a-b\n    #   predmesh (pyproject.toml)\n"
        "d==4\n    # via c\n"
    )
    assert pins == {"a-b": Version("1.2"), "c": Version("3"), "d": Version("4")}
    assert direct == {"a-b", "c"}


def test_every_requirement_of_pyproject_is_pinned_by_the_lock_within_its_range():
    pins, direct = parse_lock(LOCK.read_text())
    wrong = []
    for req in project_requirements():
        name = canonicalize_name(req.name)
        if name not in pins:
            wrong.append(f"{req}: not in the lock")
        elif not req.specifier.contains(pins[name], prereleases=True):
            wrong.append(f"{req}: the lock pins {pins[name]}")
    assert not wrong, "requirements.lock is stale, run scripts/lock.sh: " + "; ".join(wrong)
    asked = {canonicalize_name(req.name) for req in project_requirements()}
    assert direct == asked, (
        f"requirements.lock is stale, run scripts/lock.sh: pyproject asks for {sorted(asked - direct)} "
        f"that the lock does not take from it, and no longer for {sorted(direct - asked)}"
    )


def test_every_pin_carries_hashes():
    blocks = re.split(r"\n(?=[A-Za-z0-9])", LOCK.read_text())
    unhashed = [b.split()[0] for b in blocks if PIN.match(b) and "--hash=sha256:" not in b]
    assert not unhashed, f"pins without a hash: {unhashed}"


def test_the_installed_packages_are_the_locked_versions():
    """What scripts/setup.sh installed is exactly what the lock pins (the suite runs on the locked set)."""
    pins, _ = parse_lock(LOCK.read_text())
    differ = {}
    for name, version in pins.items():
        try:
            installed = Version(importlib.metadata.version(name))
        except importlib.metadata.PackageNotFoundError:
            differ[name] = f"{version} locked, not installed"
            continue
        if installed != version:
            differ[name] = f"{version} locked, {installed} installed"
    assert not differ, f"the environment is not the lock's (run scripts/setup.sh): {differ}"
