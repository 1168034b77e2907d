"""Shared by the browser tests: Debian's Chromium, driven by Playwright, one per test module."""
from __future__ import annotations

import playwright.sync_api as playwright_api
import pytest

from tests.support.ui import CHROMIUM, CHROMIUM_ARGS


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()
