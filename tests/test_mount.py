"""tokenwire mounted in someone else's app: a FastAPI app with routes of its own mounts
``create_app(provider=...)`` under ``/llm`` and runs tokenwire's lifespan in its own with
``tokenwire.lifespan``; served by a real uvicorn. Streams, the ``events_url`` and ``Location``
it returns, resume, auth's public paths and the OpenAI error shape all respect the mount
path, and the provider starts and stops with the host."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Self

import httpx
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount

import tokenwire
from tests.helpers import asgi_client, serve
from tokenwire.protocol.events import FinishReason
from tokenwire.providers.scripted import Script, ScriptedProvider, scripted_text
from tokenwire.settings import Settings
from tokenwire_client import AsyncClient

KEY = "tw-mount-test-key-0123456789abcdef"
MESSAGES = [{"role": "user", "content": "hello"}]


class Tracked(ScriptedProvider):
    """The scripted provider, remembering its lifespan."""

    def __init__(self, script: Script) -> None:
        super().__init__(script)
        self.lifecycle: list[str] = []

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        return cls(Script())

    async def start(self) -> None:
        self.lifecycle.append("start")

    async def aclose(self) -> None:
        self.lifecycle.append("aclose")


def host_app(provider: Tracked, **settings: object) -> FastAPI:
    llm = tokenwire.create_app(Settings(**settings), provider=provider)  # type: ignore[arg-type]  # Settings fields given as objects

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with tokenwire.lifespan(app):
            yield

    host = FastAPI(lifespan=lifespan)

    @host.get("/hello")
    async def hello() -> dict[str, str]:
        return {"hello": "world"}

    @host.get("/shadow", name="stream_events")  # a host route with tokenwire's route name
    async def shadow() -> dict[str, str]:
        return {}

    host.mount("/llm", llm)
    return host


@pytest.fixture
def provider() -> Tracked:
    return Tracked(Script(tokens=20, interval=0.002))


async def test_streams_under_the_mount_path_next_to_the_hosts_routes(provider, transport):
    host = host_app(provider)
    assert provider.lifecycle == []  # nothing starts before the server does
    with serve(host) as server:
        assert provider.lifecycle == ["start"]
        base = server.base_url + "/llm"
        async with AsyncClient(base, transport=transport) as client:
            stream = client.stream(MESSAGES, max_tokens=20)
            events = [event async for event in stream]
            hello = (await client.http.get(server.base_url + "/hello")).json()
            health = (await client.http.get(base + "/healthz")).json()
    assert provider.lifecycle == ["start", "aclose"]  # stopped with the host
    assert stream.text == scripted_text(20)
    assert events[-1].type == "stream.end" and stream.end is not None
    assert stream.end.finish_reason == FinishReason.LENGTH
    assert hello == {"hello": "world"}
    assert health["status"] == "ok" and health["provider"] == "scripted"


async def test_events_url_and_location_carry_the_mount_path_and_resume_works(provider):
    with serve(host_app(provider)) as server:
        async with httpx.AsyncClient(timeout=30) as http:
            created = await http.post(
                server.base_url + "/llm/v1/streams",
                json={"messages": MESSAGES, "max_tokens": 20, "on_disconnect": "detach"},
                headers={"Accept": "application/json"},
            )
            body = created.json()
            events_url = body["events_url"]
            whole = await http.get(events_url)
            resumed = await http.get(events_url, params={"last_event_id": "11"})
    assert created.status_code == 201
    assert events_url == f"{server.base_url}/llm/v1/streams/{body['stream_id']}/events"
    assert created.headers["location"] == events_url
    assert text_of(whole.text) == scripted_text(20)
    # seq 1 is stream.start, seq 2..21 the 20 tokens: after seq 11, tokens 10..19
    assert text_of(resumed.text) == scripted_text(20)[len(scripted_text(10)) :]
    assert '"finish_reason":"length"' in resumed.text


async def test_auth_public_paths_and_error_shapes_hold_inside_the_mount(provider):
    with serve(host_app(provider, api_keys=KEY)) as server:
        async with httpx.AsyncClient(base_url=server.base_url + "/llm", timeout=30) as http:
            health = await http.get("/healthz")
            page = await http.get("/")
            script = await http.get("/web/tokenwire.js")
            refused = await http.post("/v1/streams", json={"messages": MESSAGES})
            openai_refused = await http.post(
                "/v1/chat/completions", json={"model": "scripted", "messages": MESSAGES}
            )
            allowed = await http.post(
                "/v1/chat/completions",
                json={"model": "scripted", "messages": MESSAGES, "max_tokens": 3},
                headers={"Authorization": f"Bearer {KEY}"},
            )
    assert health.status_code == 200  # public, as at the root
    assert page.status_code == 200 and 'src="web/app.js"' in page.text
    assert script.status_code == 200
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthorized"
    assert openai_refused.status_code == 401
    assert openai_refused.json()["error"]["type"] == "authentication_error"  # OpenAI's shape
    assert allowed.json()["choices"][0]["message"]["content"] == scripted_text(3)


async def test_lifespan_helper_with_starlette_and_with_the_tokenwire_app_itself():
    first, second = Tracked(Script(tokens=2)), Tracked(Script(tokens=3))
    llm = tokenwire.create_app(Settings(), provider=first)
    inner = tokenwire.create_app(Settings(), provider=second)

    async def home(request: object) -> PlainTextResponse:
        return PlainTextResponse("home")

    host = Starlette(routes=[Mount("/llm", llm), Mount("/deep", routes=[Mount("/er", inner)])])
    async with tokenwire.lifespan(host):
        assert first.lifecycle == ["start"] and second.lifecycle == ["start"]
    assert first.lifecycle == second.lifecycle == ["start", "aclose"]
    async with tokenwire.lifespan(llm):
        assert first.lifecycle[-1] == "start"
    assert first.lifecycle[-1] == "aclose"
    with pytest.raises(ValueError, match="no tokenwire app in Starlette: mount one first"):
        async with tokenwire.lifespan(Starlette(routes=[])):
            pass


async def test_mounted_without_the_lifespan_helper_in_process():
    """The in-process client runs the host's lifespan, which enters tokenwire's."""
    provider = Tracked(Script(tokens=4))
    host = host_app(provider)
    async with asgi_client(host) as client:  # type: ignore[arg-type]  # a FastAPI app: a Starlette subclass
        response = await client.post(
            "/llm/v1/streams",
            json={"messages": MESSAGES},
            headers={"Accept": "application/json"},
        )
    assert provider.lifecycle == ["start", "aclose"]
    assert response.json()["events_url"].startswith("http://localhost/llm/v1/streams/")


def text_of(sse: str) -> str:
    return "".join(
        json.loads(line[6:]).get("delta", "")
        for line in sse.splitlines()
        if line.startswith("data: ") and '"type":"text.delta"' in line
    )
