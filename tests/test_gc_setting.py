"""``TOKENWIRE_GC_YOUNG_THRESHOLD``: Python's young-generation GC threshold while the app runs,
and Python's own thresholds back after its lifespan."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from pydantic import ValidationError

from tests.helpers import asgi_client, scripted_app
from tokenwire.settings import Settings


@pytest.fixture
def thresholds() -> Iterator[tuple[int, int, int]]:
    """The thresholds before the test (put back after it, whatever it did)."""
    before = gc.get_threshold()
    yield before
    gc.set_threshold(*before)


async def test_the_threshold_applies_while_the_app_runs_and_is_put_back(
    thresholds: tuple[int, int, int],
) -> None:
    young = thresholds[0] * 7 + 3  # not a value anything else would set
    app, _ = scripted_app(gc_young_threshold=young)
    async with asgi_client(app) as client:
        assert gc.get_threshold() == (young, *thresholds[1:])
        response = await client.post(
            "/v1/streams", json={"messages": [{"role": "user", "content": "hi"}]}
        )
        assert response.status_code == 200
        assert "event: stream.end" in response.text
    assert gc.get_threshold() == thresholds


async def test_unset_leaves_python_s_thresholds(thresholds: tuple[int, int, int]) -> None:
    app, _ = scripted_app()
    async with asgi_client(app):
        assert gc.get_threshold() == thresholds
    assert gc.get_threshold() == thresholds


def test_the_environment_sets_it_and_zero_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENWIRE_GC_YOUNG_THRESHOLD", "5000")
    assert Settings().gc_young_threshold == 5000
    monkeypatch.setenv("TOKENWIRE_GC_YOUNG_THRESHOLD", "0")  # would turn collection off
    with pytest.raises(ValidationError, match="gc_young_threshold"):
        Settings()
