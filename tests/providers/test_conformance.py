"""The built-in providers pass the conformance kit (``tokenwire.testing.check_provider``):
scripted always; local on the bundled model; openai against ``python -m llama_cpp.server``
(the upstream fixture of test_openai_provider.py), where the upstream's own log shows that
closing the stream stopped it."""

from __future__ import annotations

import pytest

from tests.helpers import free_port
from tests.providers.test_openai_provider import (  # noqa: F401 - the fixture, shared
    DISCONNECTED,
    MODEL,
    Upstream,
    upstream,
)
from tokenwire.protocol.events import FinishReason
from tokenwire.protocol.requests import GenerateParams
from tokenwire.providers.base import Finish
from tokenwire.providers.openai import OpenAIProvider
from tokenwire.providers.scripted import Script, ScriptedProvider
from tokenwire.testing import CHECKS, check_provider

LONG = GenerateParams.model_validate(
    {
        "messages": [{"role": "user", "content": "Write a long story about a lighthouse."}],
        "max_tokens": 24,
        "temperature": 0,
        "seed": 1,
    }
)


async def test_the_scripted_provider_conforms():
    report = await check_provider(
        ScriptedProvider(Script(tokens=40)),
        failing_provider=ScriptedProvider(Script(tokens=40, error_after=2)),
    )
    assert report.passed and list(report.checks) == list(CHECKS)
    finish = report.events[-1]
    assert isinstance(finish, Finish) and finish.reason is FinishReason.LENGTH


@pytest.mark.local_model
async def test_the_local_provider_conforms():
    from tokenwire.providers.local import LocalProvider

    report = await check_provider(LocalProvider(), params=LONG, stream_timeout=120)
    assert report.passed, str(report)
    assert report.checks["usage"].details == []  # it reports its usage, and it adds up


@pytest.mark.local_model
async def test_the_openai_provider_conforms(upstream: Upstream):  # noqa: F811 - the fixture
    disconnects = upstream.output().count(DISCONNECTED)

    def upstream_stopped() -> bool:  # llama.cpp's server logs each client it stops for
        return upstream.output().count(DISCONNECTED) > disconnects

    report = await check_provider(
        OpenAIProvider(base_url=upstream.base_url, api_key=None, model=MODEL),
        params=LONG,
        failing_provider=OpenAIProvider(
            base_url=f"http://127.0.0.1:{free_port()}/v1", api_key=None, model=MODEL
        ),
        upstream_stopped=upstream_stopped,
        stream_timeout=120,
    )
    assert report.passed, str(report)
    # llama.cpp's server sends no usage chunk: tokenwire counts the tokens itself
    assert report.checks["usage"].details == [
        "no usage reported: tokenwire counts the yielded tokens"
    ]
