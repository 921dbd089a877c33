"""The official openai Node SDK, unmodified, against tokenwire's Responses API:
``responses.create({stream: true})`` and a background response resumed with
``retrieve(id, {stream: true, starting_after})`` (tests/node/responses_stream.mjs)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.helpers import scripted_app, serve
from tokenwire.protocol.requests import GenerateParams
from tokenwire.providers.scripted import Script, scripted_text

NODE_DIR = Path(__file__).parent.parent / "node"


def script_for(params: GenerateParams) -> Script:
    if params.messages[-1].content == "long":
        return Script(tokens=40, interval=0.005)
    return Script(tokens=12)


def test_the_node_sdk_streams_and_resumes_a_response():
    app, provider = scripted_app()
    provider.script_for = script_for
    with serve(app) as server:
        ran = subprocess.run(
            ["node", "responses_stream.mjs", server.base_url],
            cwd=NODE_DIR,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert ran.returncode == 0, ran.stderr
    out = json.loads(ran.stdout)
    assert out["types"][:2] == ["response.created", "response.in_progress"]
    assert out["types"][-1] == "response.completed"
    assert out["numbers"][0] == 0 and out["numbers"] == sorted(set(out["numbers"]))
    assert out["text"] == scripted_text(12)
    assert all(number > out["last"] for number in out["resumedNumbers"])
    assert out["before"] + out["after"] == scripted_text(40) == out["final"]
