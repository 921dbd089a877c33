"""The demo page as a chat page, in headless Chromium over a real uvicorn: reasoning in a
"Thinking" block and tool calls as cards; Markdown rendered and model HTML sanitized; copy and
retry; the conversation kept across a reload; the server's error in its bubble; the history
trimmed to the model's context; logging in with an API key; a compact phone layout; the live
region on the answer in progress only; the waiting state of a queued stream. Screenshots go to
test-artifacts/, and to docs/img/ with ``TOKENWIRE_DOCS_SCREENSHOTS=1``."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from playwright.async_api import Page, WebSocketRoute

from tests.helpers import serve
from tests.web.test_page import ask, last_reply, open_page, tags, until_idle
from tokenwire.app import create_app
from tokenwire.edge.keys import TOKEN_PREFIX
from tokenwire.errors import ProviderError
from tokenwire.protocol.requests import GenerateParams
from tokenwire.providers.base import Delta
from tokenwire.providers.function import FunctionProvider
from tokenwire.providers.scripted import (
    Script,
    ScriptedProvider,
    scripted_reasoning,
    scripted_text,
    scripted_tool_calls,
)
from tokenwire.settings import Settings

DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"
KEY = "tw_page-test-key-0123456789"

ANSWER = """## Reversing a list

Use **slicing** or `reversed()`:

```python
def reverse(items):
    return items[::-1]
```

| way | copies? |
|---|---|
| `items[::-1]` | yes |
| `items.reverse()` | no, in place |

- fast
- readable"""

ATTACK = """Look: <img src="x" onerror="window.pwned = 'img'">
<script>window.pwned = 'script'</script>
[a link](javascript:window.pwned='link') <a href="#" onclick="window.pwned = 'click'">here</a>"""


def app_with(provider: Any, **settings: Any) -> Any:
    return create_app(Settings(**settings), provider=provider)


def answering(answer: Callable[[str], str], pieces: int = 12) -> FunctionProvider:
    """A provider that streams ``answer(question)`` in ``pieces`` deltas (cut anywhere, as
    tokens are)."""

    async def generate(params: GenerateParams) -> AsyncIterator[Delta]:
        text = answer(params.messages[-1].content)
        size = -(-len(text) // pieces)
        for start in range(0, len(text), size):
            await asyncio.sleep(0.02)  # long enough for the page to be seen streaming
            yield Delta(text[start : start + size])

    return FunctionProvider(generate, models=["markdown-demo"])


async def exchange(page: Page, text: str) -> None:
    """Send ``text`` and wait for the reply to be complete (however fast it was)."""
    before = await page.evaluate("() => tokenwireDemo.turns.length")
    await page.fill("#prompt", text)
    await page.press("#prompt", "Enter")
    await page.wait_for_function(
        f"() => tokenwireDemo.turns.length >= {before + 2} && tokenwireDemo.state === 'idle'",
        timeout=20_000,
    )


async def screenshot(page: Page, artifacts: Path, name: str, *, docs: bool = False) -> None:
    """Into test-artifacts/; the README's (``docs``) also into docs/img/ when
    ``TOKENWIRE_DOCS_SCREENSHOTS`` is set."""
    await page.screenshot(path=artifacts / name)
    if docs and os.environ.get("TOKENWIRE_DOCS_SCREENSHOTS"):
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=DOCS_IMG / name)


async def test_reasoning_in_a_thinking_block_and_tool_calls_as_cards(browser, artifacts, transport):
    provider = ScriptedProvider(Script(tokens=18, reasoning_tokens=16, tool_calls=2, interval=0.03))
    with serve(app_with(provider)) as server:
        page, errors = await open_page(browser, server, transport)
        await ask(page, "What is the weather in Paris and Lagos?")
        # open while the model reasons, before the answer begins
        await page.wait_for_function("() => document.querySelector('.thinking')?.open === true")
        await until_idle(page)
        reasoning = await page.text_content(".thinking .reasoning")
        folded = await page.eval_on_selector(".thinking", "d => d.open")
        await page.click(".thinking summary")
        unfolded = await page.eval_on_selector(".thinking", "d => d.open")
        await page.set_viewport_size({"width": 1000, "height": 820})
        cards = page.locator(".tool-card")
        names = await cards.locator(".tool-name").all_text_contents()
        ids = await cards.locator(".tool-id").all_text_contents()
        arguments = [
            json.loads(text) for text in await cards.locator(".tool-args").all_text_contents()
        ]
        module = await page.evaluate(
            "() => ({reasoning: tokenwireDemo.stream.reasoning,"
            " calls: tokenwireDemo.stream.toolCalls})"
        )
        await screenshot(page, artifacts, f"chat-reasoning-tools-{transport}.png")
        if transport == "sse":
            await screenshot(page, artifacts, "chat-reasoning-tools.png", docs=True)
    expected = scripted_tool_calls(2)
    assert reasoning == scripted_reasoning(16)
    assert await last_reply(page) == scripted_text(18)
    assert folded is False and unfolded is True
    assert names == [name for _, name, _ in expected] and ids == [i for i, _, _ in expected]
    assert arguments == [json.loads(args) for _, _, args in expected]
    assert module["reasoning"] == scripted_reasoning(16)
    assert [(c["index"], c["call_id"], c["name"], c["arguments"]) for c in module["calls"]] == [
        (index, *call) for index, call in enumerate(expected)
    ]
    assert "tool_calls" in await tags(page)
    assert errors == []


async def test_markdown_is_rendered_and_model_html_never_runs(browser, artifacts, transport):
    provider = answering(lambda question: ATTACK if "attack" in question else ANSWER)
    with serve(app_with(provider)) as server:
        page, errors = await open_page(browser, server, transport)
        await page.set_viewport_size({"width": 900, "height": 860})
        await exchange(page, "How do I reverse a list in Python?")
        reply = page.locator(".message.assistant .content").last
        heading = await reply.locator("h2").text_content()
        code = await reply.locator(".code-block pre code").text_content()
        code_font = await reply.locator("pre code").evaluate("e => getComputedStyle(e).fontFamily")
        cells = await reply.locator("table td").all_text_contents()
        bold = await reply.locator("strong").text_content()
        await screenshot(page, artifacts, f"chat-light-{transport}.png")
        if transport == "sse":
            await screenshot(page, artifacts, "chat-light.png", docs=True)
            await page.click("#theme")
            await screenshot(page, artifacts, "chat-dark.png", docs=True)
        await exchange(page, "Now the attack")
        attack = page.locator(".message.assistant .content").last
        shown = await attack.text_content()
        dangerous = await attack.evaluate(
            """e => ({
                scripts: e.querySelectorAll('script').length,
                handlers: [...e.querySelectorAll('*')].filter(
                    n => [...n.attributes].some(a => a.name.startsWith('on'))).length,
                hrefs: [...e.querySelectorAll('a')].map(a => a.getAttribute('href')),
                images: e.querySelectorAll('img').length,
            })"""
        )
        await attack.locator("a", has_text="here").click()
        await page.wait_for_function(
            "() => document.querySelector('.message.assistant:last-child img')?.complete"
        )
        pwned = await page.evaluate("() => window.pwned ?? null")
    assert heading == "Reversing a list" and bold == "slicing"
    assert code == "def reverse(items):\n    return items[::-1]\n"
    assert "monospace" in code_font
    assert cells == ["items[::-1]", "yes", "items.reverse()", "no, in place"]
    assert shown.startswith("Look:") and "a link" in shown  # the text stays, the code goes
    assert dangerous["scripts"] == 0 and dangerous["handlers"] == 0 and dangerous["images"] == 1
    assert all(not (href or "").startswith("javascript:") for href in dangerous["hrefs"])
    assert pwned is None  # the image failed to load, the link was clicked: nothing ran
    assert errors == []


async def test_copy_and_retry(browser, transport):
    counts = iter([6, 9])
    seen: list[GenerateParams] = []

    def script_for(params: GenerateParams) -> Script:
        seen.append(params)
        return Script(tokens=next(counts), interval=0.01)

    provider = ScriptedProvider(script_for=script_for)
    with serve(app_with(provider)) as server:
        context = await browser.new_context(permissions=["clipboard-read", "clipboard-write"])
        page = await context.new_page()
        await page.goto(f"{server.base_url}/?transport={transport}")
        await page.wait_for_function("() => window.tokenwireDemo !== undefined")
        await exchange(page, "Say something")
        await page.click(".message.assistant .copy")
        copied = await page.evaluate("() => navigator.clipboard.readText()")
        await page.click(".message.assistant .retry")
        await page.wait_for_function(
            "() => tokenwireDemo.turns.length === 2 && tokenwireDemo.state === 'idle'"
        )
        replies = await page.locator(".message.assistant").count()
        text = await last_reply(page)
        history = await page.evaluate("() => tokenwireDemo.history")
        await context.close()
    assert copied == scripted_text(6)
    assert replies == 1 and text == scripted_text(9)  # the reply was replaced
    assert [[m.content for m in p.messages] for p in seen] == [["Say something"]] * 2
    assert history == [
        {"role": "user", "content": "Say something"},
        {"role": "assistant", "content": scripted_text(9)},
    ]


async def test_the_conversation_survives_a_reload(browser, transport):
    seen: list[GenerateParams] = []

    def script_for(params: GenerateParams) -> Script:
        seen.append(params)
        return Script(tokens=5, reasoning_tokens=3, interval=0.01)

    provider = ScriptedProvider(script_for=script_for)
    with serve(app_with(provider)) as server:
        page, errors = await open_page(browser, server, transport)
        focused_first = await page.evaluate("() => document.activeElement.id")
        await exchange(page, "first question")
        await page.reload()
        await page.wait_for_function("() => window.tokenwireDemo !== undefined")
        focused = await page.evaluate("() => document.activeElement.id")
        restored = await page.locator(".message").count()
        reply = await last_reply(page)
        thinking = await page.text_content(".thinking .reasoning")
        await exchange(page, "second question")
        await page.click("#clear")
        await page.reload()
        await page.wait_for_function("() => window.tokenwireDemo !== undefined")
        after_clear = await page.locator(".message").count()
    assert focused_first == focused == "prompt"
    assert restored == 2 and reply == scripted_text(5) and thinking == scripted_reasoning(3)
    assert [m.content for m in seen[1].messages] == [
        "first question",
        scripted_text(5),
        "second question",
    ]
    assert after_clear == 0
    assert errors == []


async def test_the_servers_error_is_shown_in_its_bubble(browser, transport):
    message = "Requested tokens (2371) exceed context window of 2048"

    async def too_long(params: GenerateParams) -> AsyncIterator[str]:
        yield "Partial"
        await asyncio.sleep(0.1)
        raise ProviderError(message)

    with serve(app_with(FunctionProvider(too_long))) as server:
        page, errors = await open_page(browser, server, transport)
        await exchange(page, "A very long question")
        notice = await page.locator(".message.assistant .bubble .notice").text_content()
        failed = await page.locator(".message.assistant.failed").count()
        await page.reload()
        await page.wait_for_function("() => window.tokenwireDemo !== undefined")
        notice_after_reload = await page.locator(".message.assistant .notice").text_content()
    assert notice == f"provider_error: {message}"
    assert failed == 1 and notice_after_reload == notice
    assert errors == []


async def test_a_long_history_is_trimmed_to_the_models_context(browser, transport):
    seen: list[GenerateParams] = []

    def script_for(params: GenerateParams) -> Script:
        seen.append(params)
        return Script(tokens=40, interval=0.005)

    provider = ScriptedProvider(script_for=script_for, context_window=600)
    question = " ".join(["Please tell me more about how tokens are streamed and resumed."] * 2)
    with serve(app_with(provider)) as server:
        page, errors = await open_page(browser, server, transport)
        await page.wait_for_function("() => tokenwireDemo.contextWindow === 600")
        model = await page.text_content("#model")
        for turn in range(4):
            await exchange(page, f"{turn}: {question}")
        notes = await page.locator(".message.assistant .trimmed").all_text_contents()
        history = await page.evaluate("() => tokenwireDemo.history.length")
    sizes = [len(params.messages) for params in seen]
    assert model == "scripted · 600 tokens"
    assert sizes[0] == 1 and sizes[1] == 3  # what fits is sent whole...
    assert sizes[-1] < 7  # ...then the oldest turns are dropped
    last = seen[-1].messages
    assert last[0].role == "user" and last[-1].content == f"3: {question}"
    assert sum(len(m.content) for m in last) // 3 + 8 * len(last) <= 600 - 150
    assert all(params.max_tokens == 150 for params in seen)  # a quarter of the context
    assert notes and notes[-1].startswith(f"{7 - sizes[-1]} earlier messages left out")
    assert "600 tokens" in notes[-1]
    assert history == 8  # the page keeps the whole conversation
    assert errors == []


async def test_the_page_logs_in_with_an_api_key(browser, artifacts, transport):
    provider = ScriptedProvider(Script(tokens=8, interval=0.01))
    with serve(app_with(provider, api_keys=KEY)) as server:
        page = await browser.new_page(viewport={"width": 1000, "height": 760})
        errors: list[Any] = []
        urls: list[str] = []
        page.on("pageerror", lambda error: errors.append(error))
        page.on("request", lambda request: urls.append(request.url))
        page.on("websocket", lambda socket: urls.append(socket.url))
        await page.goto(f"{server.base_url}/?transport={transport}")
        await page.wait_for_function("() => document.querySelector('#auth').open")  # the 401
        focused = await page.evaluate("() => document.activeElement.id")
        await page.fill("#api-key", "tw_wrong-key-000000000000")
        await page.click("#auth-submit")
        await page.wait_for_function("() => !document.querySelector('#auth-error').hidden")
        refused = await page.text_content("#auth-error")
        await screenshot(page, artifacts, f"auth-{transport}.png")
        await page.fill("#api-key", KEY)
        await page.click("#auth-submit")
        await page.wait_for_function("() => !document.querySelector('#auth').open")
        await exchange(page, "Hello")
        reply = await last_reply(page)
        stored = await page.evaluate("() => sessionStorage.getItem('tokenwire.apiKey')")
        await page.close()
    assert focused == "api-key"
    assert refused.startswith("The server refused this key")
    assert reply == scripted_text(8) and stored == KEY
    assert any(url.endswith("/v1/tokens") for url in urls)
    streamed = [url for url in urls if "/events" in url or "/v1/ws" in url]
    assert streamed and all(f"token={TOKEN_PREFIX}." in url for url in streamed)
    assert all(KEY not in url for url in urls)  # the key itself never travels in a URL
    assert errors == []


async def test_a_phone_gets_a_compact_layout(browser, artifacts):
    provider = ScriptedProvider(Script(tokens=30, reasoning_tokens=6, tool_calls=1, interval=0.01))
    with serve(app_with(provider)) as server:
        page = await browser.new_page(
            viewport={"width": 375, "height": 740}, device_scale_factor=2, is_mobile=True
        )
        await page.goto(f"{server.base_url}/?transport=websocket")
        await page.wait_for_function("() => window.tokenwireDemo !== undefined")
        await exchange(page, "What's the weather?")
        layout = await page.evaluate(
            """() => {
                const box = (s) => document.querySelector(s).getBoundingClientRect();
                return {
                    width: document.documentElement.scrollWidth,
                    stats: box('.stats').height,
                    conversation: box('#conversation').height,
                    composer: box('#composer').bottom,
                    send: box('#send').right,
                };
            }"""
        )
        await screenshot(page, artifacts, "chat-mobile.png", docs=True)
    assert layout["width"] <= 375  # nothing wider than the screen
    assert layout["stats"] <= 40  # the figures take one slim line, not a quarter of the screen
    assert layout["conversation"] >= 0.55 * 740
    assert layout["composer"] <= 740 and layout["send"] <= 375


async def test_only_the_answer_in_progress_is_a_live_region(browser, transport):
    provider = ScriptedProvider(Script(tokens=6, interval=0.01))
    with serve(app_with(provider)) as server:
        page, errors = await open_page(browser, server, transport)
        await exchange(page, "one")
        provider.script = Script(tokens=400, interval=0.01)
        await ask(page, "two")
        live = await page.evaluate(
            """() => [...document.querySelectorAll('[aria-live]')].map(e => ({
                polite: e.getAttribute('aria-live') === 'polite',
                busy: e.getAttribute('aria-busy'),
                inLastReply: e.closest('.message.assistant') ===
                    [...document.querySelectorAll('.message.assistant')].at(-1),
            }))"""
        )
        await page.click("#stop")
        await until_idle(page)
        busy_after = (
            await page.locator(".message.assistant")
            .last.locator(".content")
            .get_attribute("aria-busy")
        )
        conversation = await page.get_attribute("#conversation", "aria-live")
    assert live == [{"polite": True, "busy": "true", "inLastReply": True}]
    assert busy_after == "false" and conversation is None
    assert errors == []


async def test_a_queued_stream_shows_a_waiting_state(browser):
    """``stream.queued`` {position} is the local engine's "all slots busy" event (being added
    to the server): the page and tokenwire.js handle it when it arrives. The WebSocket server
    here is Playwright's route, which sends what the test says when the test says it."""
    sockets: list[WebSocketRoute] = []

    def route(socket: WebSocketRoute) -> None:
        sockets.append(socket)
        socket.on_message(lambda message: None)

    with serve(app_with(ScriptedProvider())) as server:
        page, errors = await open_page(browser, server, "websocket")
        await page.route_web_socket("**/v1/ws", route)
        await ask(page, "Hello")
        while not sockets:  # the page's socket reaches the route
            await page.wait_for_timeout(20)
        socket = sockets[0]

        def send(**event: Any) -> None:
            socket.send(json.dumps({"stream_id": "st_1", **event}))

        send(type="stream.start", seq=1, model="scripted", created=0, request_id=None)
        send(type="stream.queued", seq=2, position=3)
        await page.wait_for_selector(".message.assistant .waiting")
        waiting = await page.text_content(".message.assistant .waiting")
        status = await page.text_content("#status")
        send(type="stream.queued", position=1)  # without a seq: accepted as well
        await page.wait_for_function(
            "() => document.querySelector('.waiting')?.textContent.includes('1 ahead')"
        )
        send(type="text.delta", seq=3, delta="Hi there")
        send(type="stream.end", seq=4, finish_reason="stop", usage=None)
        await until_idle(page)
        gone = await page.locator(".waiting").count()
        reply = await last_reply(page)
    assert waiting == "Waiting for a free slot · 3 ahead in the queue" and status == "queued"
    assert gone == 0 and reply == "Hi there"
    assert errors == []


async def test_the_module_takes_a_key_or_a_token_provider(browser, transport):
    provider = ScriptedProvider(Script(tokens=6, reasoning_tokens=2, interval=0.005))
    with serve(app_with(provider, api_keys=KEY)) as server:
        page = await browser.new_page()
        await page.goto(f"{server.base_url}/?transport={transport}")
        await page.wait_for_function("() => document.querySelector('#auth').open")
        result = await page.evaluate(
            """async ([transport, key]) => {
                const { TokenwireClient } = await import("./web/tokenwire.js");
                const read = async (client) => {
                    const stream = client.stream([{ role: "user", content: "Hi" }]);
                    try {
                        for await (const event of stream) { /* gather */ }
                        return { text: stream.text, reasoning: stream.reasoning };
                    } catch (error) {
                        return { code: error.code, status: error.status };
                    }
                };
                let minted = 0;
                const token = async () => {  // e.g. the page's own backend minting for it
                    minted += 1;
                    const response = await fetch("v1/tokens", {
                        method: "POST", headers: { Authorization: `Bearer ${key}` },
                    });
                    return (await response.json()).token;
                };
                return {
                    key: await read(new TokenwireClient({ transport, apiKey: key })),
                    provider: await read(new TokenwireClient({ transport, token })),
                    minted,
                    wrong: await read(new TokenwireClient({ transport, apiKey: "tw_nope-000000" })),
                };
            }""",
            [transport, KEY],
        )
        await page.close()
    expected = {"text": scripted_text(6), "reasoning": scripted_reasoning(2)}
    assert result["key"] == expected and result["provider"] == expected
    assert result["minted"] >= 1
    assert result["wrong"] == {"code": "unauthorized", "status": 401}
