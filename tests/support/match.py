"""re.search that must find: the test fails with the pattern when the text lacks it."""
from __future__ import annotations

import re


def search(pattern: str, text: str, flags: int = 0) -> re.Match[str]:
    found = re.search(pattern, text, flags)
    assert found is not None, f"{pattern!r} not found"
    return found
