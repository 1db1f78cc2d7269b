"""Chat answers in every framing an upstream may send (issue 12 point 4): the reader sniffs the body.

OnlySq's own sample client for /ai/v2 reads raw lines, strips `data: ` only when present and never looks at
the content type; these tests send each framing that client accepts, through a real server process.
"""

from __future__ import annotations

import httpx2
import pytest
from mcp import Client

from onlysq_mcp.errors import UpstreamBadResponse, UpstreamUnavailable
from onlysq_mcp.openai_chat import NO_END_MARKER, ChatReader
from onlysq_mcp.server import app_factory
from tests.fake_upstream import CHAT_PATH, YANDEX_CHAT_PATH
from tests.helpers import text_of
from tests.test_upstream_unit import make_upstream, pieces

pytestmark = pytest.mark.anyio

PROVIDERS = [(CHAT_PATH, "gpt-4o-mini"), (YANDEX_CHAT_PATH, "aliceai-llm")]
FRAMINGS = ["bare_lines", "newline_events", "plain_sse", "crlf_events", "pretty_json"]


@pytest.mark.parametrize(("path", "model"), PROVIDERS)
async def test_every_framing_gives_the_whole_answer(stdio_params, upstream, path, model):
    async with Client(stdio_params) as client:
        for kind in FRAMINGS:
            upstream.add_fault(path, kind)
            result = await client.call_tool("chat", {"prompt": f"framed as {kind}", "model": model})
            assert upstream.pending_faults(path) == 0
            assert not result.is_error, (kind, text_of(result))
            assert text_of(result) == f"Echo: framed as {kind}", kind
            assert result.structured_content["finish_reason"] == "stop", kind
            assert result.structured_content["note"] is None, kind
            if kind != "pretty_json":
                assert result.structured_content["usage"]["total_tokens"] > 0, kind


async def test_a_pretty_printed_error_body_gives_the_providers_message(stdio_params, upstream):
    upstream.add_fault(CHAT_PATH, "pretty_json", message="provider queue is full")
    async with Client(stdio_params) as client:
        result = await client.call_tool("chat", {"prompt": "hi"})
    assert result.is_error
    assert "OnlySq: answered with an error: provider queue is full" in text_of(result), text_of(result)


@pytest.mark.parametrize(("path", "model"), PROVIDERS)
async def test_a_clean_end_without_a_marker_returns_what_arrived_with_a_note(
    streamed_stdio_params, upstream, path, model
):
    upstream.add_fault(path, "cut_stream", after_chunks=1000)  # all the text, then no finish chunk, no [DONE]
    upstream.add_fault(path, "cut_stream", after_chunks=2)
    async with Client(streamed_stdio_params) as client:
        whole = await client.call_tool("chat", {"prompt": "all of it", "model": model})
        part = await client.call_tool("chat", {"prompt": "part of it", "model": model})
    for result, reply in ((whole, "Echo: all of it"), (part, "Echo: pa")):  # the fake sends 4 characters a chunk
        assert not result.is_error, text_of(result)
        assert text_of(result) == f"{reply}\n\n[{NO_END_MARKER}]"
        assert result.structured_content["reply"] == reply
        assert result.structured_content["note"] == NO_END_MARKER
        assert result.structured_content["finish_reason"] == "unknown"


async def test_a_clean_end_before_any_text_is_an_error(streamed_server, upstream):
    upstream.add_fault(CHAT_PATH, "cut_stream", after_chunks=0)
    async with Client(streamed_server) as client:
        result = await client.call_tool("chat", {"prompt": "nothing"})
    assert result.is_error
    assert "ended before any text arrived" in text_of(result)


@pytest.mark.parametrize(("path", "model"), PROVIDERS)
async def test_a_network_cut_keeps_the_partial_answer_in_the_error(streamed_stdio_params, upstream, path, model):
    upstream.add_fault(path, "abort_stream", after_chunks=3)
    async with Client(streamed_stdio_params) as client:
        result = await client.call_tool("chat", {"prompt": "hello there", "model": model})
        after = await client.call_tool("chat", {"prompt": "again", "model": model})
    assert result.is_error
    text = text_of(result)
    assert "closed the connection" in text, text
    assert text.endswith(
        "The answer was cut off after 12 characters; what arrived (all of it) follows.\n\nEcho: hello "
    )
    assert text_of(after) == "Echo: again"


async def test_a_long_partial_answer_is_kept_in_part(streamed_server, upstream):
    upstream.chat_reply = "".join(f"{i:05d} " for i in range(2000))  # 12,000 characters
    upstream.stream_piece_chars = 100
    upstream.add_fault(CHAT_PATH, "abort_stream", after_chunks=50)
    async with Client(streamed_server) as client:
        result = await client.call_tool("chat", {"prompt": "long"})
    text = text_of(result)
    assert result.is_error
    assert "cut off after 5,000 characters; what arrived (the last 4,000) follows.\n\n" in text
    assert text.endswith(upstream.chat_reply[1000:5000])
    assert upstream.chat_reply[:1000] not in text


async def test_an_unstreamed_request_reads_every_framing_too(make_settings, upstream):
    server = app_factory(make_settings(ONLYSQ_STREAM="false"))
    upstream.add_fault(CHAT_PATH, "pretty_json")
    async with Client(server) as client:
        result = await client.call_tool("chat", {"prompt": "pretty"})
    assert not result.is_error, text_of(result)
    assert text_of(result) == "Echo: pretty"


# --- the reader alone, against bodies no server would send in one piece ---------------------------------

CHUNK = b'{"object": "chat.completion.chunk", "choices": [{"delta": {"content": "%s"}, "finish_reason": null}]}'


async def read_body(content, content_type: str = "text/event-stream"):
    upstream = make_upstream(
        lambda request: httpx2.Response(200, headers={"content-type": content_type}, content=content)
    )
    response = await upstream.open("POST", "/chat")
    return await ChatReader(upstream, stream_timeout=5).read("m", response, None)


async def test_line_ends_split_across_reads_byte_by_byte():
    body = (
        b": hi\r\ndata\r\nid: 1\ndata:\n\n"
        + b"data:"
        + CHUNK % b"a"
        + b"\r\n\r\n"
        + CHUNK % b"b"
        + b"\r"
        + b"data: [DONE]\r\n"
    )
    result = await read_body(pieces(*(body[i : i + 1] for i in range(len(body)))))
    assert result.reply == "ab"
    assert result.note is None and result.finish_reason == "stop"


async def test_a_pretty_printed_completion_in_any_content_type():
    body = b'\n{\n  "model": "served",\n  "choices": [\n    {"message": {"content": "hi\\nthere"}}\n  ]\n}\n'
    result = await read_body(pieces(body[:7], body[7:]), content_type="application/octet-stream")
    assert (result.model, result.reply, result.finish_reason) == ("served", "hi\nthere", "stop")


async def test_a_line_that_never_ends_is_bounded():
    with pytest.raises(UpstreamBadResponse, match="larger than 10,000 bytes"):
        await read_body(pieces(b"data: " + b"x" * 6000, b"x" * 6000))


async def test_text_before_a_network_error_is_kept():
    async def broken():
        yield b"data: " + CHUNK % b"paid for" + b"\n\n"
        raise httpx2.ReadError("reset")

    with pytest.raises(UpstreamUnavailable, match=r"cut off after 8 characters.*\n\npaid for$"):
        await read_body(broken())
