"""OpenAI-style chat completions as both upstreams send them: the messages, and the reading of an answer.

A streamed answer is `chat.completion.chunk` objects ending in `[DONE]`, framed as Server-Sent Events or as
bare lines (`ChatReader` sniffs which); an unstreamed one is a `chat.completion` body. The format is OpenAI's
API reference (Chat Completions, "Streaming"), which OnlySq's API2.0 docs and Yandex AI Studio's
`openai-compatibility.md` both follow.
Nothing here knows about MCP or about which upstream answered.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
import httpx2
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import GenerationFailed, UpstreamBadResponse, UpstreamError, UpstreamTimeout
from .upstream import HTTPX2_ERRORS, Body, OnRetry, Upstream, find_error_message

OnDelta = Callable[[str], Awaitable[None]]


# --- wire formats -------------------------------------------------------------------------------


class TextPart(BaseModel):
    type: Literal["text"] = "text"
    text: str


class ImageURL(BaseModel):
    url: str


class ImagePart(BaseModel):
    type: Literal["image_url"] = "image_url"
    image_url: ImageURL


class Message(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str | list[TextPart | ImagePart]


class Usage(BaseModel):
    model_config = ConfigDict(extra="allow")
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None


class _ReplyMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    content: str | None = None


class _Choice(BaseModel):
    model_config = ConfigDict(extra="allow")
    message: _ReplyMessage
    finish_reason: str | None = None


class ChatCompletion(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str | None = None
    choices: list[_Choice] = Field(min_length=1)
    usage: Usage | None = None


class _Delta(BaseModel):
    model_config = ConfigDict(extra="allow")
    content: str | None = None


class _ChunkChoice(BaseModel):
    model_config = ConfigDict(extra="allow")
    delta: _Delta = _Delta()
    finish_reason: str | None = None


class ChatChunk(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str | None = None
    # Required but possibly empty: usage-only chunks carry `choices: []`.
    choices: list[_ChunkChoice]
    usage: Usage | None = None


class ChatResult(BaseModel):
    model: str
    reply: str
    finish_reason: str
    usage: Usage | None = None
    # Said when the reply may not be all of it (the stream ended without an end marker).
    note: str | None = None


def chat_request(
    messages: list[Message], *, stream: bool, temperature: float | None, max_tokens: int | None
) -> dict[str, Any]:
    """The body of a chat completion request, less the model."""
    request: dict[str, Any] = {"messages": [m.model_dump(exclude_none=True) for m in messages], "stream": stream}
    # Only what the caller set goes upstream, so each model keeps its own defaults.
    if temperature is not None:
        request["temperature"] = temperature
    if max_tokens is not None:
        request["max_tokens"] = max_tokens
    return request


# --- reading an answer --------------------------------------------------------------------------

# Most characters of a partial answer kept in the error of a stream that broke off: enough that a paid answer is
# not lost, few enough that the error stays readable.
PARTIAL_CHARS = 4000
# Every line end the WHATWG HTML standard allows in an event stream ("Server-sent events", parsing: CRLF, LF or
# a lone CR); bare JSON lines end in LF like any text.
LINE_END = re.compile(rb"\r\n|\r|\n")
# Event-stream fields that carry no data (the same section of the WHATWG standard).
NO_DATA_FIELDS = frozenset({"event", "id", "retry"})
NO_END_MARKER = (
    "The answer stream ended without an end marker ([DONE] or a finish_reason), so the reply may be incomplete."
)


@dataclass
class _Answer:
    """What a streamed answer has brought so far."""

    model: str
    pieces: list[str] = field(default_factory=list)
    chars: int = 0
    finish_reason: str | None = None
    usage: Usage | None = None
    # Whether the first data was a chunk, so that the body is a stream and not one JSON document.
    streaming: bool = False
    # Whether `[DONE]` arrived.
    done: bool = False

    @property
    def complete(self) -> bool:
        return self.done or self.finish_reason is not None


class ChatReader:
    """Reads one chat answer from `upstream`, streamed or not, within its size and time limits.

    The framing is sniffed from the body, never taken from the content type: OnlySq's own sample client for
    `/ai/v2` (API2.0 docs, "Streaming request example") reads raw lines, strips `data: ` only when present,
    stops at `[DONE]` and never looks at the content type, and the framing the live service sends is not
    established. So every line may be an event-stream `data:` line (OpenAI's streaming format), a bare JSON
    line, or a comment or other field, with blank lines or single line ends between events (both valid for
    the WHATWG standard); and a body whose first data is not a chunk is one JSON document, however laid out:
    a completion, or an `{"error": ...}` a streamed request may be answered with.
    """

    def __init__(self, upstream: Upstream, stream_timeout: float) -> None:
        self._upstream = upstream
        self._stream_timeout = stream_timeout

    async def ask(
        self,
        model: str,
        path: str,
        *,
        headers: dict[str, str],
        body: dict[str, Any],
        stream: bool,
        on_delta: OnDelta | None,
        on_retry: OnRetry | None,
    ) -> ChatResult:
        """Send the chat request `body` (`stream` as it says) to `path` and read its answer."""
        if stream:
            response = await self._upstream.open("POST", path, headers=headers, json_body=body, on_retry=on_retry)
            return await self.read(model, response, on_delta)
        # An unstreamed answer sends nothing until it is complete, so ONLYSQ_TIMEOUT, the wait for the next
        # piece of data, would cut off a long answer that a stream would have delivered. The whole-answer bound
        # of a stream (ONLYSQ_MCP_STREAM_TIMEOUT) is the wait instead, and it bounds the whole exchange: headers,
        # retries and body. The scope starts before httpx2's read timer, so it is the one that fires.
        with anyio.move_on_after(self._stream_timeout):
            response = await self._upstream.open(
                "POST", path, headers=headers, json_body=body, on_retry=on_retry, read_timeout=self._stream_timeout
            )
            return await self.read(model, response, None)
        raise UpstreamTimeout(
            self._upstream.name,
            f"the answer took longer than {self._stream_timeout:g}s (ONLYSQ_MCP_STREAM_TIMEOUT) and was abandoned; "
            "it was not streamed, so nothing of it had arrived. Ask for a shorter answer "
            "(e.g. a lower max_tokens), or raise the limit.",
        )

    async def read(self, model: str, response: httpx2.Response, on_delta: OnDelta | None) -> ChatResult:
        """The answer of an opened `response`, which this closes; `on_delta` sees each streamed piece."""
        lines = self._lines(response)
        try:
            async with contextlib.aclosing(lines):
                return await self._read_lines(model, response, lines, on_delta)
        finally:
            await self._upstream.close(response)

    async def _lines(self, response: httpx2.Response) -> AsyncGenerator[str, None]:
        """The lines of the body as they arrive; the body, and so each line, is bounded by
        ONLYSQ_MCP_MAX_RESPONSE_BYTES."""
        limit = self._upstream.max_body_bytes
        received = 0
        pending = bytearray()
        async with contextlib.aclosing(response.aiter_bytes()) as parts:
            async for part in parts:
                received += len(part)
                if received > limit:
                    raise self._upstream.too_large(limit)
                start = 0
                # A CRLF split between two parts reads as an extra blank line, which every framing skips.
                for end in LINE_END.finditer(part):
                    pending += part[start : end.start()]
                    yield pending.decode("utf-8", errors="replace")
                    pending.clear()
                    start = end.end()
                pending += part[start:]
        if pending:
            yield pending.decode("utf-8", errors="replace")

    async def _read_lines(
        self, model: str, response: httpx2.Response, lines: AsyncIterator[str], on_delta: OnDelta | None
    ) -> ChatResult:
        answer = _Answer(model)
        try:
            # ONLYSQ_TIMEOUT bounds each wait for data; this bounds the whole answer, which an upstream
            # trickling one chunk at a time could otherwise stretch without end.
            with anyio.move_on_after(self._stream_timeout) as bound:
                async for line in lines:
                    data = data_of(line)
                    if data is None:
                        continue
                    if data == "[DONE]":
                        answer.done = True
                        break
                    if not answer.streaming:
                        if not starts_a_stream(data):
                            return self._completion(model, await self._document(data, response, lines))
                        answer.streaming = True
                    await self._take(answer, self._parse_chunk(data, answer.chars), on_delta)
            if bound.cancelled_caught:
                raise self._stream_too_slow(answer)
            if answer.done:
                # The end of the body follows [DONE]: read it, or the connection is closed rather than
                # reused, and the next call pays a new TCP and TLS handshake.
                with anyio.move_on_after(1.0):
                    async for _ in lines:
                        pass
        except HTTPX2_ERRORS as exc:
            # After [DONE] or a finish reason the answer is complete, whatever happens to the rest of the body.
            if not answer.complete:
                raise self._cut_off(self._upstream.error_for(exc), answer) from None
        return self._result(answer)

    async def _document(self, first: str, response: httpx2.Response, lines: AsyncIterator[str]) -> Body:
        """The body as one JSON document whose first data is `first`; spread over lines, with or without `data:`."""
        parts = [first]
        async for line in lines:
            data = data_of(line)
            if data is not None and data != "[DONE]":
                parts.append(data)
        return Body(response.status_code, response.headers, "\n".join(parts).encode())

    async def _take(self, answer: _Answer, chunk: ChatChunk, on_delta: OnDelta | None) -> None:
        answer.model = chunk.model or answer.model
        answer.usage = chunk.usage or answer.usage
        for choice in chunk.choices:
            if choice.delta.content:
                answer.pieces.append(choice.delta.content)
                answer.chars += len(choice.delta.content)
                if on_delta is not None:
                    await on_delta(choice.delta.content)
            answer.finish_reason = choice.finish_reason or answer.finish_reason

    def _result(self, answer: _Answer) -> ChatResult:
        if answer.finish_reason == "error":
            raise GenerationFailed(self._upstream.name, generation_failed(answer.model))
        note = None
        if not answer.complete:
            if not answer.chars:
                raise UpstreamBadResponse(
                    self._upstream.name,
                    "the answer ended before any text arrived, with no end marker ([DONE] or a finish_reason). "
                    "Try again.",
                )
            # A clean end is how the docs' sample client stops too: what arrived is the answer, said to be so.
            note = NO_END_MARKER
        return ChatResult(
            model=answer.model,
            reply="".join(answer.pieces),
            finish_reason=answer.finish_reason or ("stop" if answer.done else "unknown"),
            usage=answer.usage,
            note=note,
        )

    def _completion(self, model: str, response: Body) -> ChatResult:
        completion = self._upstream.parse(response, ChatCompletion, "choices[0].message")
        choice = completion.choices[0]
        finish_reason = choice.finish_reason or "stop"
        reply = choice.message.content or ""
        if finish_reason == "error":
            raise GenerationFailed(self._upstream.name, generation_failed(model))
        return ChatResult(
            model=completion.model or model, reply=reply, finish_reason=finish_reason, usage=completion.usage
        )

    def _cut_off(self, error: UpstreamError, answer: _Answer) -> UpstreamError:
        """`error` with the text that arrived before it, so that a paid answer is not lost."""
        if not answer.chars:
            return error
        text = "".join(answer.pieces)
        kept = text[-PARTIAL_CHARS:]
        which = "all of it" if len(kept) == len(text) else f"the last {len(kept):,}"
        message = (
            f"{str(error).removeprefix(error.upstream + ': ')} The answer was cut off after {answer.chars:,} "
            f"characters; what arrived ({which}) follows.\n\n{kept}"
        )
        return type(error)(error.upstream, message, error.retry_after)

    def _stream_too_slow(self, answer: _Answer) -> UpstreamError:
        error = UpstreamTimeout(
            self._upstream.name,
            f"the streamed answer took longer than {self._stream_timeout:g}s (ONLYSQ_MCP_STREAM_TIMEOUT) "
            f"and was abandoned after {answer.chars} characters. Ask for a shorter answer "
            "(e.g. a lower max_tokens), or raise the limit.",
        )
        return self._cut_off(error, answer)

    def _parse_chunk(self, data: str, received: int) -> ChatChunk:
        try:
            # The common case in one step, parsed and validated by pydantic-core.
            return ChatChunk.model_validate_json(data)
        except ValidationError:
            pass
        try:
            body = json.loads(data)
        except ValueError:
            raise UpstreamBadResponse(self._upstream.name, "sent a stream event that is not JSON") from None
        if isinstance(body, dict) and "error" in body:
            detail = self._upstream.upstream_words(find_error_message(body) or str(body["error"]))
            raise GenerationFailed(
                self._upstream.name, f"the model failed mid-answer ({detail}) after {received} characters"
            )
        return self._upstream.validate(body, ChatChunk, "choices")


def data_of(line: str) -> str | None:
    """The data a line of the body carries: after `data:` (with or without its space), or the whole line when
    it is bare JSON; None for a blank line, an event-stream comment (`:`), a field without data or empty data."""
    line = line.strip()
    if not line or line.startswith(":"):
        return None
    name, colon, value = line.partition(":")
    if name == "data":
        return value.strip() or None
    if colon and name in NO_DATA_FIELDS:
        return None
    return line


def starts_a_stream(data: str) -> bool:
    """Whether the first data of a body is a chunk of a stream, rather than the start of one JSON document (a
    completion, or `{"error": ...}`; one line or pretty-printed)."""
    try:
        first = json.loads(data)
    except ValueError:
        return False  # e.g. the `{` alone on the first line of a pretty-printed body
    if not isinstance(first, dict):
        return False
    if first.get("object") == "chat.completion.chunk":
        return True
    choices = first.get("choices")
    return isinstance(choices, list) and not any(isinstance(c, dict) and "message" in c for c in choices)


def generation_failed(model: str) -> str:
    return (
        f"model `{model}` reported a failed generation (finish_reason: error). "
        "Try again, rephrase, or use another model."
    )
