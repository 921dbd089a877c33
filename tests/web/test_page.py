"""The demo chat page in headless Chromium, over a real uvicorn with the scripted provider:
a reply streams over SSE and over WebSocket, Stop cancels it, "Drop connection" resumes it
with no text lost, and the browser's own EventSource reconnect after a network drop does too;
the module's API on its own; and the page with the bundled local model. Screenshots go to
test-artifacts/."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import pytest
from playwright.async_api import Browser, Page

from tests.client.test_client import drop_connections, start_when_free
from tests.helpers import (
    ServerProcess,
    UvicornThread,
    free_port,
    scripted_app,
    serve,
    wait_for,
)
from tokenwire.app import create_app
from tokenwire.protocol.requests import GenerateParams
from tokenwire.providers.scripted import Script, scripted_text
from tokenwire.settings import Settings

LABEL = {"sse": "SSE", "websocket": "WebSocket"}


async def open_page(
    browser: Browser, server: UvicornThread, transport: str, *, theme: str = "light"
) -> tuple[Page, list[Any]]:
    page = await browser.new_page(
        viewport={"width": 1000, "height": 760}, color_scheme=theme, device_scale_factor=1
    )
    errors: list[Any] = []
    page.on("pageerror", lambda error: errors.append(error))  # uncaught exceptions
    await page.goto(f"{server.base_url}/?transport={transport}")
    await page.wait_for_function("() => window.tokenwireDemo !== undefined")
    return page, errors


async def ask(page: Page, text: str) -> None:
    """Send ``text``; returns once the reply is streaming (or already complete: a short reply
    on a busy machine may end before the page is next polled)."""
    before = await page.evaluate("() => window.tokenwireDemo.turns.length")
    await page.fill("#prompt", text)
    await page.press("#prompt", "Enter")
    await page.wait_for_function(
        "() => window.tokenwireDemo.state === 'streaming'"
        f" || window.tokenwireDemo.turns.length >= {before + 2}"
    )


async def until_idle(page: Page) -> None:
    await page.wait_for_function("() => window.tokenwireDemo.state === 'idle'", timeout=20_000)


async def until_words(page: Page, count: int) -> None:
    await page.wait_for_function(
        f"() => (window.tokenwireDemo.stream?.text ?? '').split(' ').length >= {count}"
    )


async def last_reply(page: Page) -> str:
    return str(await page.locator(".message.assistant .content").last.text_content())


async def tags(page: Page) -> list[str]:
    return await page.locator(".message.assistant").last.locator(".tag").all_text_contents()


async def test_page_streams_a_reply_and_keeps_the_conversation(browser, artifacts, transport):
    seen: list[GenerateParams] = []

    def script_for(params: GenerateParams) -> Script:
        seen.append(params)
        return Script(tokens=40, interval=0.01)

    app, provider = scripted_app()
    provider.script_for = script_for
    with serve(app) as server:
        page, errors = await open_page(browser, server, transport)
        await ask(page, "Hello there")
        await until_idle(page)
        first = await last_reply(page)
        await ask(page, "And again")
        await until_idle(page)
        assert await last_reply(page) == scripted_text(40)
        await page.screenshot(path=artifacts / f"chat-{transport}.png")
        figures = {
            name: await page.text_content(f"#stat-{name}")
            for name in ("ttft", "tps", "tokens", "reconnects")
        }
        status = await page.text_content("#status")
    assert first == scripted_text(40)
    assert LABEL[transport] in await tags(page)
    assert figures["ttft"].endswith(" ms") and figures["tokens"] == "40"
    assert float(figures["tps"]) > 0 and figures["reconnects"] == "0"
    assert status == "ended"
    # the history travels with each request: user, assistant, user
    assert [m.role for m in seen[1].messages] == ["user", "assistant", "user"]
    assert seen[1].messages[1].content == scripted_text(40)
    assert errors == []


async def test_stop_cancels_the_reply(browser, artifacts, transport):
    app, provider = scripted_app(Script(tokens=2000, interval=0.01))
    with serve(app) as server:
        page, errors = await open_page(browser, server, transport)
        await page.screenshot(path=artifacts / f"empty-{transport}.png")
        await ask(page, "Go on forever")
        await until_words(page, 5)
        await page.screenshot(path=artifacts / f"streaming-{transport}.png")
        await page.click("#stop")
        await until_idle(page)
        text = await last_reply(page)
        await wait_for(lambda: provider.records[0].closed_at is not None)
    assert "cancelled" in await tags(page)
    assert len(text.split()) >= 5 and scripted_text(2000).startswith(text)
    assert provider.records[0].produced < 2000
    assert errors == []


async def test_drop_connection_resumes_with_the_full_text(browser, artifacts, transport):
    app, provider = scripted_app(Script(tokens=120, interval=0.015))
    with serve(app) as server:
        page, errors = await open_page(browser, server, transport, theme="dark")
        await ask(page, "Tell me a story")
        await until_words(page, 10)
        await page.click("#drop")
        await until_idle(page)
        await page.screenshot(path=artifacts / f"chat-drop-{transport}-dark.png")
        text = await last_reply(page)
        reconnects = await page.text_content("#stat-reconnects")
        marks = await page.locator(".message.assistant .resume-mark").count()
    assert text == scripted_text(120)  # the resume marker is drawn by CSS, not in the text
    assert reconnects == "1" and "resumed ×1" in await tags(page) and marks == 1
    assert len(provider.records) == 1 and provider.records[0].completed
    assert errors == []


async def test_a_network_drop_is_resumed_by_the_browser(browser, transport):
    app, provider = scripted_app(Script(tokens=120, interval=0.015))
    with serve(app) as server:
        page, errors = await open_page(browser, server, transport)
        await ask(page, "Tell me a story")
        await until_words(page, 10)
        assert drop_connections(server) >= 1  # TCP cut from the server side, mid-stream
        await until_idle(page)
        text = await last_reply(page)
        reconnects = int(str(await page.text_content("#stat-reconnects")))
        cursors = await page.eval_on_selector_all(
            ".message.assistant .resume-mark", "marks => marks.map(m => Number(m.dataset.seq))"
        )
    assert text == scripted_text(120)
    assert reconnects >= 1
    # the server confirmed a cursor (stream.resumed after_seq): over SSE the browser's own
    # reconnect sent Last-Event-ID, so the replay began after it, not from the start
    assert cursors and all(cursor >= 10 for cursor in cursors)
    assert len(provider.records) == 1 and provider.records[0].completed
    assert errors == []


async def test_the_module_api_events_state_and_leaving_early(browser, transport):
    app, provider = scripted_app(Script(tokens=2000, interval=0.005))
    with serve(app) as server:
        page, errors = await open_page(browser, server, transport)
        result = await page.evaluate(
            """async (transport) => {
                const { TokenwireClient } = await import("./web/tokenwire.js");
                const client = new TokenwireClient({ transport });
                const stream = client.stream([{ role: "user", content: "Hi" }], { max_tokens: 20 });
                const types = [];
                for await (const event of stream) types.push(event.type);
                const early = client.stream([{ role: "user", content: "Hi" }]);
                for await (const event of early) if (event.type === "text.delta") break;
                return {
                    types, text: stream.text, seq: stream.lastSeq, reason: stream.end.finish_reason,
                    ttft: stream.ttft, early: early.status,
                };
            }""",
            transport,
        )
        await wait_for(lambda: len(provider.records) == 2)
        await wait_for(lambda: provider.records[1].closed_at is not None)
    assert result["types"] == ["stream.start"] + ["text.delta"] * 20 + ["stream.end"]
    assert result["text"] == scripted_text(20) and result["seq"] == 22
    assert result["reason"] == "length" and result["ttft"] > 0
    assert result["early"] == "failed"  # closed by the client...
    assert provider.records[1].produced < 2000  # ...and cancelled on the server
    assert errors == []


async def test_a_refused_request_shows_the_servers_reason(browser, transport):
    app, provider = scripted_app(Script(tokens=5), max_tokens_limit=100)  # the page asks 256
    with serve(app) as server:
        page, errors = await open_page(browser, server, transport)
        await page.fill("#prompt", "Hello")
        await page.press("#prompt", "Enter")  # refused at once: no time in 'streaming' to see
        notice = await page.locator(".message.assistant .notice").text_content()
        await until_idle(page)
        history = await page.evaluate("window.tokenwireDemo.history.length")
    assert notice.startswith("invalid_request: max_tokens: must be <= 100")
    assert history == 0  # nothing came back: the question can be asked again
    assert provider.records == [] and errors == []


async def test_the_page_rides_out_a_server_restart(browser, transport, redis_server, tmp_path):
    """SIGTERM to the server mid-reply, a new process on the same port, one Redis log: the
    browser (EventSource's own reconnect, or the WebSocket client after close 1012) resumes
    on the new process and the reply is complete."""
    port = free_port()

    def process(name: str) -> ServerProcess:
        return ServerProcess(
            tmp_path,
            name,
            port=port,
            provider="scripted",
            stream_log=redis_server.url,
            scripted_tokens=250,
            scripted_interval=0.01,
            reconnect_delay=0.1,
        )

    old, new = process("old").start(), process("new")
    try:
        page, errors = await open_page(browser, old, transport)
        await ask(page, "Tell me a story")
        await until_words(page, 20)
        old.signal(signal.SIGTERM)
        await asyncio.to_thread(start_when_free, new, port)
        await until_idle(page)
        text = await last_reply(page)
        reconnects = int(str(await page.text_content("#stat-reconnects")))
    finally:
        old.stop()
        new.stop()
    assert text == scripted_text(250)
    assert reconnects >= 1
    assert errors == []


@pytest.mark.local_model
async def test_the_page_works_with_the_bundled_local_model(browser, artifacts):
    with serve(create_app(Settings(provider="local"))) as server:
        page, errors = await open_page(browser, server, "sse")
        model = await page.text_content("#model")
        await ask(page, "Name three colors.")
        await page.wait_for_function("() => window.tokenwireDemo.state === 'idle'", timeout=120_000)
        await page.screenshot(path=artifacts / "chat-local-model.png")
        text = await last_reply(page)
        usage = await page.evaluate("window.tokenwireDemo.stream.end.usage")
    assert model.startswith("smollm2-135m-instruct.q4_1")  # then its context window
    assert text.strip() and usage["completion_tokens"] > 0
    assert errors == []
