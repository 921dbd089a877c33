"""SIGTERM with a stream log that no other process can serve (the default memory log): the
drain keeps serving every open stream to its end (up to the drain timeout) and refuses new
ones with 503; then the process exits. (With Redis the streams are handed off instead: see
tests/streams/test_redis_log.py.)"""

from __future__ import annotations

import asyncio
import json
import signal

import httpx

from tests.helpers import ServerProcess
from tests.security_helpers import GENERATE, USER, sse_events, text_of, ws_connect, ws_events
from tokenwire.providers.scripted import scripted_text


async def test_sigterm_with_a_memory_log_finishes_every_open_stream(tmp_path):
    tokens = 40
    server = ServerProcess(
        tmp_path,
        "drain",
        provider="scripted",
        scripted_tokens=tokens,
        scripted_interval=0.05,
        drain_timeout=30,
    ).start()
    try:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:

            async def sse_stream(started: asyncio.Event) -> str:
                request = http.stream("POST", "/v1/streams", json={"messages": USER})
                async with request as response:
                    chunks = []
                    async for chunk in response.aiter_text():
                        chunks.append(chunk)
                        started.set()
                    return "".join(chunks)

            async def ws_stream(started: asyncio.Event) -> list[dict]:
                async with ws_connect(server.base_url) as ws:
                    await ws.send(json.dumps(GENERATE))
                    first = json.loads(await ws.recv())
                    started.set()
                    return [first, *await ws_events(ws, within=30)]

            flags = [asyncio.Event() for _ in range(4)]
            tasks = [asyncio.create_task(sse_stream(flag)) for flag in flags[:2]]
            tasks += [asyncio.create_task(ws_stream(flag)) for flag in flags[2:]]
            await asyncio.gather(*(flag.wait() for flag in flags))
            server.signal(signal.SIGTERM)
            await asyncio.sleep(0.2)
            refused = await http.post("/v1/streams", json={"messages": USER})
            results = await asyncio.gather(*tasks)
        exit_code = await asyncio.to_thread(server.wait, 30)
    finally:
        server.stop()
    assert refused.status_code == 503, refused.text
    for result in results:
        events = sse_events(result) if isinstance(result, str) else result
        assert events[-1]["type"] == "stream.end", events[-3:]
        assert events[-1]["finish_reason"] == "stop"
        assert text_of(events) == scripted_text(tokens)
    assert exit_code in (0, -signal.SIGTERM)
    assert "Traceback" not in server.log()
