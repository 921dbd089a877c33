"""The "AI SDK" page (``/aisdk``) in headless Chromium over a real uvicorn: the AI SDK's own
``DefaultChatTransport`` and ``WebSocketChatTransport`` (the bundle in clients/web/vendor/,
no CDN) stream a reply, Stop cancels it through ``POST /api/chat/{id}/stop``, and "Drop
connection" cuts the transport mid-reply and resumes with the exact text. Screenshots go to
test-artifacts/."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.async_api import Browser, Page

from tests.helpers import UvicornThread, scripted_app, serve
from tokenwire.protocol.requests import GenerateParams
from tokenwire.providers.scripted import Script, scripted_text

TOKENS = 60


def script_for(params: GenerateParams) -> Script:
    if params.messages[-1].content == "short":
        return Script(tokens=12)
    return Script(tokens=TOKENS, interval=0.04)


def recording(seen: list[GenerateParams]) -> Any:
    def script(params: GenerateParams) -> Script:
        seen.append(params)
        return script_for(params)

    return script


@pytest.fixture(params=["http", "websocket"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def server() -> Any:
    app, provider = scripted_app()
    seen: list[GenerateParams] = []
    provider.script_for = recording(seen)
    with serve(app) as running:
        running.provider = provider
        running.seen = seen
        yield running


async def open_page(browser: Browser, server: UvicornThread, mode: str) -> tuple[Page, list[Any]]:
    page = await browser.new_page(viewport={"width": 1000, "height": 760})
    errors: list[Any] = []
    page.on("pageerror", lambda error: errors.append(error))
    await page.goto(f"{server.base_url}/aisdk?transport={mode}")
    await page.wait_for_function("() => window.aisdkDemo !== undefined")
    return page, errors


async def ask(page: Page, text: str) -> None:
    """Send ``text``; returns once the turn has begun (it may have ended already)."""
    before = await page.evaluate("() => window.aisdkDemo.turns")
    await page.fill("#prompt", text)
    await page.press("#prompt", "Enter")
    await page.wait_for_function(f"() => window.aisdkDemo.turns > {before}")


async def until_idle(page: Page) -> dict[str, Any]:
    await page.wait_for_function("() => window.aisdkDemo.state === 'idle'", timeout=20_000)
    state: dict[str, Any] = await page.evaluate("() => ({...window.aisdkDemo})")
    return state


async def until_words(page: Page, count: int) -> None:
    await page.wait_for_function(f"() => window.aisdkDemo.text.split(' ').length >= {count}")


async def test_the_page_streams_two_turns_with_the_sdks_transport(browser, server, mode, artifacts):
    page, errors = await open_page(browser, server, mode)
    await ask(page, "short")
    first = await until_idle(page)
    assert first["text"] == scripted_text(12)
    assert first["finish"] == "stop" and first["error"] is None
    await ask(page, "short")  # the conversation so far goes along (UI messages, converted)
    second = await until_idle(page)
    assert second["text"] == scripted_text(12)
    sent = server.seen[-1].messages
    assert [m.role for m in sent] == ["user", "assistant", "user"]
    assert sent[1].content == scripted_text(12)
    bubbles = await page.locator(".message.assistant .content").all_text_contents()
    assert bubbles == [scripted_text(12)] * 2
    await page.screenshot(path=str(artifacts / f"aisdk-page-{mode}.png"))
    assert errors == []


async def test_stop_cancels_the_generation(browser, server, mode):
    page, errors = await open_page(browser, server, mode)
    await ask(page, "long")
    await until_words(page, 5)
    await page.click("#stop")
    state = await until_idle(page)
    assert state["finish"] == "abort"
    assert scripted_text(TOKENS).startswith(state["text"])
    assert len(state["text"]) < len(scripted_text(TOKENS))
    record = server.provider.records[-1]
    assert not record.completed and record.produced < TOKENS
    assert await page.locator("#status").text_content() == "abort"
    assert errors == []


async def test_drop_connection_resumes_with_the_exact_text(browser, server, mode):
    page, errors = await open_page(browser, server, mode)
    await ask(page, "long")
    await until_words(page, 5)
    await page.click("#drop")
    state = await until_idle(page)
    assert state["resumes"] == 1
    assert state["error"] is None
    assert state["text"] == scripted_text(TOKENS)
    assert state["finish"] == "stop"
    assert len(server.provider.records) == 1  # resumed, not asked again
    assert await page.locator(".message.assistant .content").all_text_contents() == [
        scripted_text(TOKENS)
    ]
    assert errors == []


async def test_with_an_api_key_both_transports_authenticate(browser):
    key = "tw_aisdk-page-key-0123456789"
    app, _ = scripted_app(Script(tokens=12), api_keys=key)
    with serve(app) as running:
        for mode in ("http", "websocket"):
            page, errors = await open_page(browser, running, mode)
            await ask(page, "without a key")
            refused = await until_idle(page)
            assert refused["error"] and refused["text"] == ""
            await page.fill("#api-key", key)  # HTTP: Bearer; WebSocket: a minted query token
            await ask(page, "with the key")
            state = await until_idle(page)
            assert state["error"] is None and state["text"] == scripted_text(12)
            assert errors == []
