"""The chat index of the AI SDK routes: which stream is a chat's active one, kept in the stream
log as a document (:meth:`~tokenwire.streams.log.StreamLog.put_document`), so that every
worker sharing the log (memory: one process; Redis: all of them) answers a resume or a stop
for a chat that another worker started.

The SDK's resume (``GET /api/chat/{id}/stream``, ``useChat({resume: true})``) and its
``WebSocketChatTransport`` name a *chat*, never a stream: this index maps one to the other.
Entries are keyed by the API key that owns the chat (``None``: anonymous, when the server has
no keys) and the chat id, hashed: one key never sees, resumes or stops another key's chat
(a lookup of another key's chat finds nothing, exactly as for a chat that never was).

A stream that has ended is no chat's active stream: :func:`open_active` clears the entry
when it finds the stream over (clearing marks it ended: documents have a TTL, no delete).
The entry of a stream that ended unseen lives on until its TTL, and is ignored on the next
look. Two requests of one chat that race (a send while another worker clears) may leave the
newer stream unindexed only if the clear lands after the newer entry was written: clearing
checks that the entry still names the ended stream first (not atomic; the window is one
round trip to the log).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from dataclasses import dataclass

from pydantic import BaseModel

from tokenwire.streams.log import CursorExpired, StreamLog, UnknownStream
from tokenwire.streams.registry import Attachment, Streams

UNWRITTEN_GRACE = 5.0
"""Seconds after an entry was written during which a stream that a shared log (Redis) does not
hold yet is waited for (its first events may not have reached Redis), polling every
:data:`UNWRITTEN_POLL` seconds; later it counts as gone."""

UNWRITTEN_POLL = 0.05


class _Entry(BaseModel):
    stream_id: str
    message_id: str | None = None
    created: float = 0.0  # unix seconds, when the entry was written
    ended: bool = False  # cleared: the stream is over


@dataclass(frozen=True, slots=True)
class ActiveChat:
    """A chat's active stream, and the id of the assistant message it builds (what the
    replayed ``start`` chunk must name again)."""

    stream_id: str
    message_id: str | None
    created: float


def chat_key(owner: str | None, chat_id: str) -> str:
    """The document key of a chat: a hash of the owner and the chat id (fixed length, whatever
    the client's chat id)."""
    digest = hashlib.sha256(f"{owner or ''}\x00{chat_id}".encode()).hexdigest()
    return f"aisdk-chat:{digest}"


async def remember_active(
    log: StreamLog,
    owner: str | None,
    chat_id: str,
    stream_id: str,
    *,
    message_id: str | None = None,
    ttl: float,
) -> None:
    """Make ``stream_id`` the active stream of ``owner``'s chat ``chat_id`` for ``ttl``
    seconds (replacing any other). Raises ``StreamLogUnavailable``."""
    entry = _Entry(stream_id=stream_id, message_id=message_id, created=time.time())
    await log.put_document(chat_key(owner, chat_id), entry.model_dump_json(), ttl=ttl)


async def _entry(log: StreamLog, owner: str | None, chat_id: str) -> _Entry | None:
    raw = await log.get_document(chat_key(owner, chat_id))
    return None if raw is None else _Entry.model_validate_json(raw)


async def active_chat(log: StreamLog, owner: str | None, chat_id: str) -> ActiveChat | None:
    """The entry of ``owner``'s chat ``chat_id``: ``None`` when there is none (never, cleared,
    expired, or another key's). Does not check whether the stream has ended (see
    :func:`open_active`). Raises ``StreamLogUnavailable``."""
    entry = await _entry(log, owner, chat_id)
    if entry is None or entry.ended:
        return None
    return ActiveChat(entry.stream_id, entry.message_id, entry.created)


async def active_stream(log: StreamLog, owner: str | None, chat_id: str) -> str | None:
    """The stream id of :func:`active_chat`, or ``None``."""
    chat = await active_chat(log, owner, chat_id)
    return None if chat is None else chat.stream_id


async def clear_active(
    log: StreamLog, owner: str | None, chat_id: str, stream_id: str, *, ttl: float
) -> None:
    """Forget ``stream_id`` as the chat's active stream, if the entry still names it (the
    entry stays, marked ended, for :func:`stop_active` to answer ``ended``)."""
    entry = await _entry(log, owner, chat_id)
    if entry is not None and entry.stream_id == stream_id and not entry.ended:
        ended = entry.model_copy(update={"ended": True})
        await log.put_document(chat_key(owner, chat_id), ended.model_dump_json(), ttl=ttl)


async def open_active(
    streams: Streams, log: StreamLog, owner: str | None, chat_id: str, *, ttl: float
) -> tuple[ActiveChat, Attachment] | None:
    """The chat's active stream attached from its first event (a replay from seq 1, then
    live), or ``None`` when the chat has no stream that is still running: no entry, the
    stream has ended (the entry is then cleared), or the log no longer holds it.

    ``streams`` is the caller's view of the registry (the edge's, which checks that the
    caller owns the stream). Raises ``StreamLogUnavailable``, ``NotFound`` (the stream is
    another key's: an entry can only say so if the index was tampered with)."""
    chat = await active_chat(log, owner, chat_id)
    if chat is None:
        return None
    attachment: Attachment | None = None
    with contextlib.suppress(UnknownStream, CursorExpired):
        attachment = await _resume(streams, log, chat)
    if attachment is None or attachment.subscription is None:  # gone, or ended
        if attachment is not None:
            attachment.detach("ended")
        await clear_active(log, owner, chat_id, chat.stream_id, ttl=ttl)
        return None
    return chat, attachment


async def _resume(streams: Streams, log: StreamLog, chat: ActiveChat) -> Attachment:
    """Resume from the start, waiting (see :func:`unwritten`) for a shared log to hold the
    stream's first events."""
    while True:
        try:
            return await streams.resume(chat.stream_id, 0)
        except UnknownStream:
            if not unwritten(log, chat):
                raise
        await asyncio.sleep(UNWRITTEN_POLL)


async def stop_active(
    streams: Streams, log: StreamLog, owner: str | None, chat_id: str, *, ttl: float
) -> tuple[ActiveChat, str] | None:
    """Cancel the chat's active stream wherever it runs (the log's cancel routing). Returns
    the entry and the registry's status (``cancelled``: it ran here, ``cancelling``: the
    request went to the worker that runs it, ``ended``: it was over; the entry is then
    cleared), or ``None`` when the chat has no entry (never, expired, another key's).
    Raises ``StreamLogUnavailable``."""
    entry = await _entry(log, owner, chat_id)
    if entry is None:
        return None
    chat = ActiveChat(entry.stream_id, entry.message_id, entry.created)
    if entry.ended:
        return chat, "ended"
    while True:
        try:
            status = await streams.cancel_anywhere(chat.stream_id)
            break
        except UnknownStream:
            if not unwritten(log, chat):
                status = "ended"  # the log no longer holds it
                break
        await asyncio.sleep(UNWRITTEN_POLL)
    if status == "ended":
        await clear_active(log, owner, chat_id, chat.stream_id, ttl=ttl)
    return chat, status


def unwritten(log: StreamLog, chat: ActiveChat) -> bool:
    """Whether a stream the log does not know may just not be written yet: a shared log,
    within :data:`UNWRITTEN_GRACE` of the entry."""
    return log.shared and time.time() - chat.created <= UNWRITTEN_GRACE
