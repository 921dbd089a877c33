"""The AI SDK chat index on both stream-log backends: a chat's active stream is seen by every
worker on the log, per API key (another key's chat is not there), and clearing only forgets
the stream it names."""

from __future__ import annotations

from tokenwire.chats import active_chat, active_stream, chat_key, clear_active, remember_active


async def test_the_active_stream_of_a_chat_is_seen_by_another_worker_of_its_key_only(shared_logs):
    a, b = shared_logs
    assert await active_stream(b, "key_1", "chat") is None
    await remember_active(a, "key_1", "chat", "str_1", message_id="msg_1", ttl=60)
    chat = await active_chat(b, "key_1", "chat")
    assert chat is not None
    assert (chat.stream_id, chat.message_id) == ("str_1", "msg_1")
    assert await active_stream(b, "key_2", "chat") is None  # another key's chat: not there
    assert await active_stream(b, None, "chat") is None  # nor the anonymous one's
    await remember_active(a, "key_1", "chat", "str_2", ttl=60)  # a newer stream replaces it
    await clear_active(b, "key_1", "chat", "str_1", ttl=60)  # the old one's end: no effect
    assert await active_stream(b, "key_1", "chat") == "str_2"
    await clear_active(b, "key_1", "chat", "str_2", ttl=60)
    assert await active_stream(a, "key_1", "chat") is None


def test_chat_keys_are_fixed_length_and_separate_owner_from_chat():
    assert chat_key("ab", "c") != chat_key("a", "bc")
    assert len(chat_key(None, "x" * 10_000)) == len(chat_key("k", ""))
