"""Browser fixtures: Debian's Chromium (installed with apt-get when missing) driven by
Playwright for Python. Playwright's own browser download is never used: ``executable_path``
points at the system Chromium (``TOKENWIRE_CHROMIUM`` overrides the path)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, async_playwright

from tests.web.browser import ARTIFACTS, ensure_chromium


@pytest.fixture(scope="session")
def chromium() -> Path:
    return ensure_chromium()


@pytest.fixture
async def browser(chromium: Path) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(chromium))
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where screenshots go (git-ignored)."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
