"""The WebSocketChatTransport frames (tokenwire.protocol.aisdk_ws): the client frames as the
SDK's own validator takes them, errors that name the frame's requestId, and the numbering of
chunks (contiguous; merged deltas padded; ``after`` for a resume)."""

from __future__ import annotations

import json

import pytest

from tokenwire.protocol.aisdk import UIMessageEncoder
from tokenwire.protocol.aisdk_ws import (
    AbortFrame,
    ChunkNumbering,
    FrameError,
    ResumeFrame,
    SendFrame,
    chunk_frame,
    decode_frame,
    error_frame,
)
from tokenwire.protocol.events import StreamEnd, StreamStart, TextDelta

MESSAGE = {"id": "u1", "role": "user", "parts": [{"type": "text", "text": "hi"}]}
SEND = {
    "type": "send",
    "requestId": "r1",
    "id": "chat",
    "trigger": "submit-message",
    "messages": [MESSAGE],
    "headers": {"x-a": "1"},
    "body": {"temperature": 0.5},
    "metadata": None,
}


def test_the_three_client_frames_decode():
    send = decode_frame(json.dumps(SEND))
    assert isinstance(send, SendFrame) and send.messageId is None
    assert send.chat_request() == {
        "temperature": 0.5,
        "id": "chat",
        "messages": [MESSAGE],
        "trigger": "submit-message",
    }
    again = {**SEND, "trigger": "regenerate-message", "messageId": "m"}
    regenerate = decode_frame(json.dumps(again))
    assert isinstance(regenerate, SendFrame) and regenerate.chat_request()["messageId"] == "m"
    resume = {"type": "resume", "requestId": "r2", "id": "chat", "headers": {}, "body": {}}
    decoded = decode_frame(json.dumps(resume))
    assert isinstance(decoded, ResumeFrame) and decoded.lastSequence is None
    after = decode_frame(json.dumps({**resume, "lastSequence": 7, "extra": True}))
    assert isinstance(after, ResumeFrame) and after.lastSequence == 7
    assert isinstance(decode_frame(b'{"type":"abort","requestId":"r3"}'), AbortFrame)


@pytest.mark.parametrize(
    ("frame", "request_id", "says"),
    [
        ("{nope", "", "not valid JSON"),
        ("[1, 2]", "", "JSON object"),
        ('{"type": "ping", "requestId": "r"}', "r", "unknown frame type 'ping'"),
        ('{"type": "abort"}', "", "requestId"),
        ('{"type": "abort", "requestId": 5}', "", "requestId"),
        (json.dumps({**SEND, "headers": {"a": 1}}), "r1", "headers"),
        (json.dumps({**SEND, "trigger": "again"}), "r1", "trigger"),
        (json.dumps({k: v for k, v in SEND.items() if k != "messages"}), "r1", "messages"),
        (
            '{"type": "resume", "requestId": "r", "id": "c", "headers": {}, "body": {}, '
            '"lastSequence": -1}',
            "r",
            "lastSequence",
        ),
        ("[" * 5000 + "]" * 5000, "", "nested too deeply"),
    ],
)
def test_a_bad_frame_is_refused_naming_the_problem_and_its_request(frame, request_id, says):
    with pytest.raises(FrameError) as caught:
        decode_frame(frame)
    assert caught.value.request_id == request_id
    assert says in caught.value.message


def test_server_frames_have_the_sdks_keys_only():
    assert json.loads(chunk_frame("r", 3, {"type": "start-step"})) == {
        "type": "chunk",
        "requestId": "r",
        "sequence": 3,
        "chunk": {"type": "start-step"},
    }
    error = {"type": "error", "requestId": "", "errorText": "bad"}
    assert json.loads(error_frame("", "bad")) == error


def events(deltas: list[tuple[int, str]], end_seq: int) -> list:
    out: list = [StreamStart(stream_id="s", seq=1, model="m", created=0)]
    out += [TextDelta(stream_id="s", seq=seq, delta=text) for seq, text in deltas]
    out.append(StreamEnd(stream_id="s", seq=end_seq, finish_reason="stop", usage=None))
    return out


def numbered(deltas: list[tuple[int, str]], end_seq: int, after: int = -1) -> list[dict]:
    numbering = ChunkNumbering("r", UIMessageEncoder("msg").encode, after=after)
    return [json.loads(f) for e in events(deltas, end_seq) for f in numbering.frames(e)]


def test_merged_deltas_keep_the_numbers_of_the_unmerged_log():
    unmerged = numbered([(2, "a"), (3, "b"), (4, "c"), (5, "d")], 6)
    merged = numbered([(2, "a"), (4, "bc"), (5, "d")], 6)  # seqs 3 and 4 in one event
    assert [f["sequence"] for f in merged] == list(range(len(unmerged)))
    assert [f["chunk"]["type"] for f in merged] == [f["chunk"]["type"] for f in unmerged]
    deltas = [f["chunk"]["delta"] for f in merged if f["chunk"]["type"] == "text-delta"]
    assert deltas == ["a", "bc", "", "d"]
    # after the run (sequence 6: the last delta of seq 4), both say the same text
    assert "".join(deltas[:3]) == "abc"


def test_after_skips_the_numbers_a_resume_has_seen():
    whole = numbered([(2, "a"), (3, "b"), (4, "c")], 5)
    rest = numbered([(2, "a"), (3, "b"), (4, "c")], 5, after=4)
    assert rest == [f for f in whole if f["sequence"] > 4]
    assert [f["chunk"].get("delta") for f in rest[:1]] == ["c"]
