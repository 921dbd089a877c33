"""The Responses API across two ``tokenwire serve`` processes sharing one Redis: a background
response made on A, its connection dropped, resumed on B by sequence_number with the exact text;
retrieved, continued and cancelled on B. The official openai SDK, unmodified, on both."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.helpers import RedisServer, ServerProcess, two_workers
from tokenwire.providers.scripted import scripted_text

TOKENS = 150


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer) -> Iterator[Any]:
    tmp_path = tmp_path_factory.mktemp("responses-workers")
    with two_workers(
        tmp_path,
        redis_server.url,
        provider="scripted",
        scripted_tokens=TOKENS,
        scripted_interval=0.01,
    ) as both:
        yield both


def sdk(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key="x", max_retries=0)


def text_of(events: list[Any]) -> str:
    return "".join(e.delta for e in events if e.type == "response.output_text.delta")


def test_made_on_a_dropped_resumed_on_b_exactly(workers):
    a, b = workers
    with sdk(a) as on_a, sdk(b) as on_b:
        stream = on_a.responses.create(model="scripted", input="hi", stream=True, background=True)
        seen: list[Any] = []
        for event in stream:
            seen.append(event)
            if sum(e.type == "response.output_text.delta" for e in seen) == 3:
                break
        stream.close()  # the connection drops; the background response runs on, on A
        last = seen[-1].sequence_number
        response_id = seen[0].response.id
        with on_b.responses.retrieve(response_id, stream=True, starting_after=last) as resumed:
            after = list(resumed)
        assert all(e.sequence_number > last for e in after)
        assert text_of(seen) + text_of(after) == scripted_text(TOKENS)
        assert after[-1].type == "response.completed"
        final = on_b.responses.retrieve(response_id)
        assert (final.status, final.output_text) == ("completed", scripted_text(TOKENS))
        # continued on B from the record and the log that A wrote
        follow = on_b.responses.create(
            model="scripted", input="go on", previous_response_id=response_id, max_output_tokens=4
        )
        assert follow.output_text == scripted_text(4) and follow.status == "incomplete"
        assert follow.incomplete_details is not None
        assert follow.incomplete_details.reason == "max_output_tokens"


def test_cancelled_on_b_while_it_runs_on_a(workers):
    a, b = workers
    with sdk(a) as on_a, sdk(b) as on_b:
        created = on_a.responses.create(model="scripted", input="hi", background=True)
        cancelled = on_b.responses.cancel(created.id)
        assert cancelled.status == "cancelled"
        assert on_a.responses.retrieve(created.id).status == "cancelled"
        assert on_b.responses.cancel(created.id).status == "cancelled"  # idempotent
        with pytest.raises(openai.NotFoundError):
            on_b.responses.cancel("resp_nothing_here")
