"""The demo page of a tokenwire app mounted under ``/llm`` in a FastAPI app, in headless
Chromium over a real uvicorn: every call the page and ``tokenwire.js`` make stays under the
mount path, on both transports, and Stop reaches the stream."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

import tokenwire
from tests.helpers import serve
from tests.web.test_page import ask, last_reply, until_idle, until_words
from tokenwire.providers.scripted import Script, ScriptedProvider, scripted_text
from tokenwire.settings import Settings


def mounted(provider: ScriptedProvider) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with tokenwire.lifespan(app):
            yield

    host = FastAPI(lifespan=lifespan)
    host.mount("/llm", tokenwire.create_app(Settings(), provider=provider))
    return host


async def test_the_page_works_under_a_mount_path(browser, transport):
    provider = ScriptedProvider(Script(tokens=30, interval=0.005))
    requests: list[str] = []
    with serve(mounted(provider)) as server:
        page = await browser.new_page()
        errors: list[object] = []
        page.on("pageerror", lambda error: errors.append(error))
        page.on("request", lambda request: requests.append(request.url))
        page.on("websocket", lambda socket: requests.append(socket.url))
        await page.goto(f"{server.base_url}/llm?transport={transport}")  # redirected to /llm/
        await page.wait_for_function("() => window.tokenwireDemo !== undefined")
        await ask(page, "Hello")
        await until_idle(page)
        reply = await last_reply(page)
        provider.script = Script(tokens=2000, interval=0.01)
        await ask(page, "Go on")
        await until_words(page, 5)
        await page.click("#stop")
        await until_idle(page)
        await page.close()
    assert reply == scripted_text(30)
    assert provider.records[1].closed_at is not None and not provider.records[1].completed
    paths = [url.split(str(server.port), 1)[1] for url in requests]
    assert paths and all(path.startswith("/llm") for path in paths), paths
    assert any(path.startswith("/llm/v1/") for path in paths)
    assert errors == []
