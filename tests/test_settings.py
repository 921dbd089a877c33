"""Settings from the environment: what the README documents as "empty: none" (or "empty: no
limit") is ``None`` when the variable is set but empty; a required value left empty is still an
error that names it."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tokenwire.settings import Settings

OPTIONAL = [
    "first_token_timeout",
    "max_stream_duration",
    "ws_messages_per_minute",
    "heartbeat_interval",
    "send_timeout",
    "http_header_timeout",
]


@pytest.mark.parametrize("name", OPTIONAL)
def test_an_empty_optional_setting_is_none(name, monkeypatch):
    monkeypatch.setenv(f"TOKENWIRE_{name.upper()}", "")
    assert getattr(Settings(), name) is None


def test_an_empty_required_setting_is_still_an_error(monkeypatch):
    monkeypatch.setenv("TOKENWIRE_MAX_STREAMS", "")
    with pytest.raises(ValidationError, match="max_streams"):
        Settings()
