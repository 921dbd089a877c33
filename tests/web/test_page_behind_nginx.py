"""The demo page through a real nginx (the README's recipe, tests/nginx.py) in front of a real
``tokenwire serve``, in headless Chromium on the public name ``chat.example.test`` (mapped to
127.0.0.1): the page loads (its ES modules are fetched with an ``Origin``) and streams a reply
over SSE and over WebSocket, over plain HTTP and with TLS at the proxy, with the public
``Host`` forwarded or not."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, async_playwright

from tests.helpers import ServerProcess
from tests.nginx import PUBLIC_NAME, Nginx
from tokenwire.providers.scripted import scripted_text

TOKENS = 24


@pytest.fixture
async def public_browser(chromium: Path) -> AsyncIterator[Browser]:
    """Chromium resolving ``chat.example.test`` to 127.0.0.1 (no DNS, no /etc/hosts)."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(chromium),
            args=[f"--host-resolver-rules=MAP {PUBLIC_NAME} 127.0.0.1"],
        )
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture
def server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    settings = getattr(request, "param", {})
    process = ServerProcess(
        tmp_path, "server", provider="scripted", scripted_tokens=TOKENS, **settings
    )
    try:
        yield process.start()
    finally:
        process.stop()


async def chat_through(browser: Browser, url: str, transport: str) -> str:
    """Open the page at ``url``, ask once, wait for the end; the reply's text."""
    page = await browser.new_page(ignore_https_errors=True)
    errors: list[object] = []
    page.on("pageerror", lambda error: errors.append(error))
    await page.goto(f"{url}/?transport={transport}")
    await page.wait_for_function("() => window.tokenwireDemo !== undefined")
    await page.fill("#prompt", "Hello through nginx")
    await page.press("#prompt", "Enter")
    await page.wait_for_function(
        "() => window.tokenwireDemo.state === 'idle' && window.tokenwireDemo.stream?.end",
        timeout=30_000,
    )
    text = str(await page.locator(".message.assistant .content").last.text_content())
    assert errors == []
    await page.close()
    return text


@pytest.mark.parametrize("tls", [False, True], ids=["http", "tls-at-the-proxy"])
async def test_the_page_streams_through_nginx(
    public_browser: Browser, server: ServerProcess, tmp_path: Path, transport: str, tls: bool
) -> None:
    with Nginx(tmp_path, server.port) as nginx:
        text = await chat_through(public_browser, nginx.url(tls=tls), transport)
    assert text == scripted_text(TOKENS)


@pytest.mark.parametrize("server", [{"allowed_hosts": PUBLIC_NAME}], indirect=True)
async def test_the_page_streams_with_the_public_host_forwarded(
    public_browser: Browser, server: ServerProcess, tmp_path: Path, transport: str
) -> None:
    """``proxy_set_header Host $host;`` and TOKENWIRE_ALLOWED_HOSTS naming the public host."""
    with Nginx(tmp_path, server.port, extra="proxy_set_header Host $host;") as nginx:
        text = await chat_through(public_browser, nginx.url(tls=True), transport)
    assert text == scripted_text(TOKENS)
