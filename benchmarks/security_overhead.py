"""What authentication costs per request: the same server with and without API keys.

Two server processes run side by side (``python -m uvicorn tokenwire.app:create_app_from_env
--factory``, scripted provider, 4 tokens per stream, no delays): one with authentication off,
one with a key file of 100 hashed keys (``TOKENWIRE_API_KEYS_FILE``). Both have the same
middleware (Origin check, limits, metrics); only the credential check differs. The client sends,
interleaved between the two servers after 20 warm-ups each (the per-socket message rate limit
is lifted on both, since one socket sends every ``generate``):

- SSE: ``POST /v1/streams`` on a kept-alive connection, timed until the whole body was read;
- WebSocket: ``generate`` on one open socket, timed until its ``stream.end``;
- token: ``GET /v1/models?token=...`` (signed token) against ``GET /v1/models`` without one.

It prints p50/p99 in milliseconds and the ratio on/off of each. It asserts nothing.

Run (from the repository root, with the dev extra installed)::

    .venv/bin/python benchmarks/security_overhead.py            # --runs 500
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import websockets
from rich.console import Console
from rich.table import Table

from common import percentile, tokenwire_server
from tokenwire.edge.keys import key_file_line, new_api_key

BODY = {"messages": [{"role": "user", "content": "hi"}]}


SERVER_ENV = {
    "TOKENWIRE_PROVIDER": "scripted",
    "TOKENWIRE_SCRIPTED_TOKENS": "4",
    "TOKENWIRE_LOG_LEVEL": "warning",
    "TOKENWIRE_WS_MESSAGES_PER_MINUTE": "1000000",  # one socket sends every generate
}


Probe = Callable[[], Awaitable[None]]


async def timed(probe: Probe) -> float:
    started = time.perf_counter()
    async with asyncio.timeout(30):
        await probe()
    return (time.perf_counter() - started) * 1000


async def run(runs: int, off_url: str, on_url: str, key: str) -> dict[str, dict[str, list[float]]]:
    auth = {"Authorization": f"Bearer {key}"}
    results: dict[str, dict[str, list[float]]] = {}
    async with (
        httpx.AsyncClient(base_url=off_url) as off_http,
        httpx.AsyncClient(base_url=on_url, headers=auth) as on_http,
        websockets.connect(off_url.replace("http", "ws") + "/v1/ws") as off_ws,
        websockets.connect(
            on_url.replace("http", "ws") + "/v1/ws", additional_headers=auth
        ) as on_ws,
    ):
        token = (await on_http.post("/v1/tokens", json={"ttl": 3600})).json()["token"]
        bare = httpx.AsyncClient(base_url=on_url)

        def sse(http: httpx.AsyncClient) -> Probe:
            async def probe() -> None:
                response = await http.post("/v1/streams", json=BODY)
                assert response.status_code == 200 and "stream.end" in response.text

            return probe

        def ws(socket: websockets.ClientConnection) -> Probe:
            async def probe() -> None:
                await socket.send(json.dumps({"type": "generate", **BODY}))
                while json.loads(await socket.recv())["type"] != "stream.end":
                    pass

            return probe

        def get(http: httpx.AsyncClient, params: dict[str, str]) -> Probe:
            async def probe() -> None:
                response = await http.get("/v1/models", params=params)
                assert response.status_code == 200

            return probe

        cases = {
            "SSE POST /v1/streams": (sse(off_http), sse(on_http)),
            "WebSocket generate": (ws(off_ws), ws(on_ws)),
            "GET ?token=": (get(off_http, {}), get(bare, {"token": token})),
        }
        for name, (off, on) in cases.items():
            for _ in range(20):
                await off()
                await on()
            samples: dict[str, list[float]] = {"off": [], "on": []}
            for index in range(runs):  # interleaved, alternating which goes first
                pair = [("off", off), ("on", on)] if index % 2 else [("on", on), ("off", off)]
                for label, probe in pair:
                    samples[label].append(await timed(probe))
            results[name] = samples
        await bare.aclose()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=500)
    args = parser.parse_args()
    key = new_api_key()
    with tempfile.TemporaryDirectory() as tmp:
        keys = Path(tmp) / "keys"
        lines = [key_file_line(new_api_key()) for _ in range(99)] + [key_file_line(key)]
        keys.write_text("\n".join(lines) + "\n")
        tmp_path = Path(tmp)
        on_env = {"TOKENWIRE_API_KEYS_FILE": str(keys), "TOKENWIRE_TOKEN_TTL": "3600"}
        with (
            tokenwire_server(tmp_path / "off.log", {**SERVER_ENV, "TOKENWIRE_AUTH": "off"}) as off,
            tokenwire_server(tmp_path / "on.log", {**SERVER_ENV, **on_env}) as on,
        ):
            off_url, on_url = f"http://127.0.0.1:{off[1]}", f"http://127.0.0.1:{on[1]}"
            results = asyncio.run(run(args.runs, off_url, on_url, key))
    table = Table(title=f"authentication off vs on ({args.runs} runs each, ms)")
    for column in ("case", "off p50", "off p99", "on p50", "on p99", "p50 on/off", "p99 on/off"):
        table.add_column(column, justify="right" if column != "case" else "left")
    for name, samples in results.items():
        off50, off99 = percentile(samples["off"], 50), percentile(samples["off"], 99)
        on50, on99 = percentile(samples["on"], 50), percentile(samples["on"], 99)
        table.add_row(
            name,
            f"{off50:.2f}",
            f"{off99:.2f}",
            f"{on50:.2f}",
            f"{on99:.2f}",
            f"{on50 / off50:.2f}",
            f"{on99 / off99:.2f}",
        )
    Console().print(table)


if __name__ == "__main__":
    main()
