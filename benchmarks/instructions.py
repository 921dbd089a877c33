"""CPU instructions per delivered token of the apps of ``benchmarks/hot_path.py``, counted by
valgrind (callgrind): a figure that a busy machine does not move, for work on the hot path.

The apps run in-process as in ``hot_path.py`` (``receive`` hands over the request, ``send``
counts), with every token due at once (the token source yields to the event loop once per
token, ``asyncio.sleep(0)``, and no timer runs) and tokenwire's write window off
(``TOKENWIRE_WRITE_DELAY=0``): so each of tokenwire's tokens is written alone, at once, as at
20 tokens/s, and a baseline writes one frame per token as always. A run of ``--streams``
streams of ``--short`` tokens and one of ``--long`` tokens are counted whole under callgrind;
instructions per token = their difference / (streams x (long - short)), so start-up, imports
and each stream's own set-up cancel out. It prints each app's figure and, per group of
``hot_path.py`` (``--transport``), each app's over the group's last. Figures repeat within
~3% (the garbage collector's and the event loop's turns still vary a little). It asserts
nothing; each app takes about a minute (two runs under valgrind).

Run (from the repository root, with the dev extra installed and valgrind on PATH)::

    .venv/bin/python benchmarks/instructions.py                     # sse and websocket pairs
    .venv/bin/python benchmarks/instructions.py --transport rich-sse --transport rich-ws
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from starlette.types import Message

BENCHMARKS = Path(__file__).resolve().parent


async def _run(name: str, streams: int, tokens: int) -> None:
    """The child: ``streams`` streams of ``tokens`` tokens through app ``name``."""
    import hot_path
    from transport.source import Schedule, request_fields

    factory, kind, path = hot_path.APPS[name]
    app = factory()
    done = asyncio.Event()

    class Ends(hot_path.Counter):
        """Counts writes, and sets ``done`` once every stream has ended."""

        ended = 0

        async def send(self, message: Message) -> None:
            await super().send(message)
            kind = message["type"]
            text = message.get("text") or ""
            if (
                (kind == "http.response.body" and not message.get("more_body"))
                or kind == "websocket.close"
                or (kind == "websocket.send" and '"type":"stream.end"' in text)
            ):
                self.ended += 1
                if self.ended == streams:
                    done.set()

    async with app.router.lifespan_context(app):
        sink, tasks = Ends(), []
        for i in range(streams):
            body = request_fields(Schedule(time.monotonic(), tokens, ttft=0.0, interval=0.0))
            stream = hot_path._stream(app, kind, path, 10_000 + i, body, sink, done)
            tasks.append(asyncio.create_task(stream))
        await done.wait()
        await asyncio.gather(*tasks, return_exceptions=True)


def count(name: str, streams: int, tokens: int) -> int:
    """Instructions of one child run under callgrind."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise RuntimeError("valgrind is not installed (apt-get install valgrind)")
    command = [valgrind, "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable]
    command += [__file__, "--child", name, str(streams), str(tokens)]
    env = {**os.environ, "TOKENWIRE_WRITE_DELAY": "0", "PYTHONHASHSEED": "0"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"{name}: the run under valgrind failed:\n{done.stderr[-2000:]}")
    return int(found.group(1))


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        sys.path.insert(0, str(BENCHMARKS))
        import uvloop

        uvloop.run(_run(sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
        return
    sys.path.insert(0, str(BENCHMARKS))
    import hot_path

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transport", choices=sorted(hot_path.PAIRS), action="append")
    parser.add_argument("--streams", type=int, default=10)
    parser.add_argument("--short", type=int, default=10, help="tokens per stream, short run")
    parser.add_argument("--long", type=int, default=210, help="tokens per stream, long run")
    args = parser.parse_args()
    figures: dict[str, Any] = {}
    for group in args.transport or ["sse", "websocket"]:
        names = hot_path.PAIRS[group]
        for name in names:
            if name not in figures:
                short = count(name, args.streams, args.short)
                long = count(name, args.streams, args.long)
                figures[name] = (long - short) / (args.streams * (args.long - args.short))
                print(f"{name}: {figures[name]:,.0f} instructions per token", flush=True)
        *others, reference = names
        for name in others:
            print(f"  {name} / {reference}: {figures[name] / figures[reference]:.2f}")


if __name__ == "__main__":
    main()
