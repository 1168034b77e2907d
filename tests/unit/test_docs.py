"""The docs hold together: every relative link of README.md, docs/*.md, bench/README.md and CHANGELOG.md reaches
an existing file (and heading), every docs page is reachable from the README, the README stays short, and every
PREDMESH_* variable the code reads is in the configuration table."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = [README, *sorted(DOCS.glob("*.md")), ROOT / "bench" / "README.md", ROOT / "CHANGELOG.md"]
README_MAX_LINES = 200

FENCE = re.compile(r"^(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
INLINE_CODE = re.compile(r"`[^`]*`")
SOURCE_PACKAGES = ["predmesh", "inference", "database", "gateway", "cli", "consumer", "batch", "ui"]
# placeholders in predmesh/env.py's help text, not settings
NOT_SETTINGS = {"PREDMESH_X", "PREDMESH_X_FILE"}


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line.strip()):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: markup and punctuation dropped, lower case, spaces as hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor a page's headings make (a repeated heading gets -1, -2, … as on GitHub)."""
    seen: dict[str, int] = {}
    out = set()
    for line in prose_lines(path.read_text()):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def links(path: Path) -> list[str]:
    """The link targets of a page, outside code blocks and inline code."""
    found = []
    for line in prose_lines(path.read_text()):
        found += LINK.findall(INLINE_CODE.sub("", line))
    return found


def broken_links(path: Path) -> list[str]:
    problems = []
    for target in links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:: not ours to check offline
            continue
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            problems.append(f"{target}: no such file {linked}")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            problems.append(f"{target}: no heading #{anchor} in {linked.name}")
    return problems


def test_the_checker_finds_a_missing_file_and_a_missing_heading(tmp_path):
    (tmp_path / "other.md").write_text("# Other page\n\n## The `predmesh up` part\n\n## Dup\n\n## Dup\n")
    page = tmp_path / "page.md"
    page.write_text("# Page\n\n[ok](other.md#the-predmesh-up-part) [dup](other.md#dup-1) [self](#page)\n"
                    "[gone](missing.md) [wrong](other.md#nowhere) [web](https://example.org/x)\n"
                    "```\n[in code](not-checked.md)\n# not a heading\n```\n`[inline](not-checked.md)`\n")
    assert broken_links(page) == [f"missing.md: no such file {tmp_path / 'missing.md'}",
                                  "other.md#nowhere: no heading #nowhere in other.md"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    assert page.exists(), page
    assert broken_links(page) == []


def test_the_readme_stays_short():
    lines = len(README.read_text().splitlines())
    assert lines < README_MAX_LINES, f"README.md has {lines} lines; move reference material into docs/"


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(README.parent / t.partition("#")[0]).resolve() for t in links(README)}
    assert [p.name for p in sorted(DOCS.glob("*.md")) if p.resolve() not in linked] == []


def test_every_image_in_docs_is_shown_somewhere():
    shown = {(p.parent / t.partition("#")[0]).resolve() for p in PAGES for t in links(p)}
    assert [p.name for p in sorted(DOCS.iterdir()) if p.suffix in (".png", ".svg") and p.resolve() not in shown] == []


def documented(variable: str, table: str) -> bool:
    """The variable is named in the table, in full or as a `_SUFFIX` after a sibling in the same row
    (`PREDMESH_GATEWAY_TLS_CERT` / `_KEY`, `PREDMESH_ADMIN_TOKEN` (`_FILE`))."""
    if f"`{variable}`" in table:
        return True
    for row in table.splitlines():
        suffixes = re.findall(r"`(_[A-Z0-9_]+)`", row)
        for full in re.findall(r"`(PREDMESH_[A-Z0-9_]+)`", row):
            parts = full.split("_")
            stems = {"_".join(parts[:k]) for k in range(2, len(parts) + 1)}
            if any(stem + suffix == variable for stem in stems for suffix in suffixes):
                return True
    return False


def settings_variables() -> set[str]:
    """The PREDMESH_* variables every settings reader (a class with from_env, wherever it lives in the source
    packages) looks up, as the --help texts list them (predmesh.env.variables_read), plus any variable the source
    names literally (e.g. `predmesh up`'s PREDMESH_PROMETHEUS_ADDR)."""
    import importlib
    import inspect

    from predmesh.env import variables_read

    names: set[str] = set()
    for package in SOURCE_PACKAGES:
        for source in sorted((ROOT / package).rglob("*.py")):
            text = source.read_text()
            names |= set(re.findall(r"PREDMESH_[A-Z0-9_]*[A-Z0-9](?![A-Za-z0-9_{*])", text))
            if "def from_env(" not in text:
                continue
            module = importlib.import_module(".".join(source.relative_to(ROOT).with_suffix("").parts))
            for _, cls in inspect.getmembers(module, inspect.isclass):
                if cls.__module__ == module.__name__ and "from_env" in vars(cls):
                    settings: Any = cls  # any class that defines from_env, found by name
                    names |= {n.removesuffix("[_FILE]") for n in variables_read(settings.from_env)}
    return names - NOT_SETTINGS


def test_every_setting_the_code_reads_is_in_the_configuration_table():
    table = (DOCS / "configuration.md").read_text()
    read = settings_variables()
    assert {"PREDMESH_GRPC_ADDR", "PREDMESH_GATEWAY_RETRIES", "PREDMESH_FAULTS"} <= read  # readers found
    assert sorted(v for v in read if not documented(v, table)) == []
    assert not documented("PREDMESH_NOT_A_SETTING", table)


def curl_commands(text: str) -> list[str]:
    """Every curl command of a page, in code blocks or inline code, with its continuation lines joined."""
    joined = re.sub(r"\\\n\s*", " ", text)
    commands = re.findall(r"curl [^`\n]*(?:\n(?!\s*$)[^`\n]*)*?(?=`|\n\s*\n|\n```|$)", joined)
    return [" ".join(c.split()) for c in commands]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_curl_with_a_body_says_it_is_json(page):
    """The gateway refuses a /v1/ body declared as anything but JSON (415), and curl -d declares
    application/x-www-form-urlencoded: a documented command without the header fails as written."""
    bad = [c for c in curl_commands(page.read_text()) if " -d " in c and "content-type: application/json" not in c]
    assert not bad, f"{page.name}: add -H 'content-type: application/json' to: {bad}"


def test_every_fault_point_is_in_the_configuration_table():
    """PREDMESH_FAULTS' row lists the points an operator of the fault tests may arm; analytics.query_delay_ms was
    missing from it (an unknown name is a start-up error, so the row is what a reader goes by)."""
    from predmesh.faults import ENV, POINTS

    row = next(line for line in (DOCS / "configuration.md").read_text().splitlines() if line.startswith(f"| `{ENV}`"))
    assert [point for point in POINTS if f"`{point}`" not in row] == []


REPO_PATH = re.compile(r"`((?:tests|bench|scripts|deploy|inference|gateway|consumer|batch|ui|cli|database|predmesh|"
                       r"docs|protos|sdk)/[^`\s]*)`")
WRITTEN_BY_THE_READER = {"deploy/.env"}  # docs/deploy.md: copied from deploy/.env.example, never committed


def missing_paths(page: Path) -> list[str]:
    """The repository paths a page names in inline code (a glob, or `file::test`) that name nothing there."""
    missing = []
    for line in prose_lines(page.read_text()):
        for named in REPO_PATH.findall(line):
            path, _, test = named.partition("::")
            if "<" in path or path in WRITTEN_BY_THE_READER:  # a placeholder, or a file the reader makes
                continue
            found = any(ROOT.glob(path)) if "*" in path else (ROOT / path).exists()
            if not found or (test and f"def {test}(" not in (ROOT / path).read_text()):
                missing.append(named)
    return missing


@pytest.mark.parametrize("page", [p for p in PAGES if p.name != "CHANGELOG.md"], ids=lambda p: str(p.relative_to(ROOT)))
def test_every_repository_path_a_page_names_exists(page):
    """Tests moved to tests/integration/ (architecture, k8s, the stubs' freshness) were still named at their old
    places: a newcomer looking for what checks a claim found nothing. (The changelog names paths as they were.)"""
    assert missing_paths(page) == []
