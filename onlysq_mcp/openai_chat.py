"""OpenAI-style chat completions as both upstreams send them: the messages, and the reading of an answer.

A streamed answer is Server-Sent Events of `chat.completion.chunk` objects ending in `data: [DONE]`; an
unstreamed one is a `chat.completion` body. The format is OpenAI's API reference (Chat Completions,
"Streaming"), which OnlySq's API2.0 docs and Yandex AI Studio's `openai-compatibility.md` both follow.
Nothing here knows about MCP or about which upstream answered.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import anyio
import httpx2
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import GenerationFailed, UpstreamBadResponse, UpstreamTimeout
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


class ChatReader:
    """Reads one chat answer from `upstream`, streamed or not, within its size and time limits."""

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
        try:
            if not response.headers.get("content-type", "").startswith("text/event-stream"):
                # Some deployments answer a streamed request with one JSON body: take it as is.
                return self._completion(model, await self._upstream.read(response))
            return await self._read_stream(model, response, on_delta)
        finally:
            await self._upstream.close(response)

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

    async def _read_stream(self, model: str, response: httpx2.Response, on_delta: OnDelta | None) -> ChatResult:
        name = self._upstream.name
        pieces: list[str] = []
        finish_reason: str | None = None
        usage: Usage | None = None
        served_model = model
        done = False
        # The stream's total, counted in characters of event data (each event is bounded by httpx2's
        # EventSource at 1 MB); the limit is the one for whole bodies.
        received = 0
        limit = self._upstream.max_body_bytes
        events = httpx2.EventSource(response).__aiter__()
        try:
            # ONLYSQ_TIMEOUT bounds each wait for a chunk; this bounds the whole answer, which an upstream
            # trickling one chunk at a time could otherwise stretch without end.
            with anyio.move_on_after(self._stream_timeout) as bound:
                async for event in events:
                    received += len(event.data)
                    if received > limit:
                        raise self._upstream.too_large(limit)
                    data = event.data.strip()
                    if data == "[DONE]":
                        done = True
                        break
                    if not data:
                        continue
                    chunk = self._parse_chunk(data, sum(map(len, pieces)))
                    served_model = chunk.model or served_model
                    usage = chunk.usage or usage
                    for choice in chunk.choices:
                        if choice.delta.content:
                            pieces.append(choice.delta.content)
                            if on_delta is not None:
                                await on_delta(choice.delta.content)
                        finish_reason = choice.finish_reason or finish_reason
            if bound.cancelled_caught:
                raise self._stream_too_slow(sum(map(len, pieces)))
            if done:
                # The end of the body follows [DONE]: read it, or the connection is closed rather than
                # reused, and the next call pays a new TCP and TLS handshake.
                with anyio.move_on_after(1.0):
                    async for _ in events:
                        pass
        except HTTPX2_ERRORS as exc:
            # After [DONE] or a finish reason the answer is complete, whatever happens to the rest of the body.
            if not done and finish_reason is None:
                raise self._upstream.error_for(exc) from None
        if finish_reason == "error":
            raise GenerationFailed(name, generation_failed(model))
        if not done and finish_reason is None:
            received = sum(map(len, pieces))
            raise UpstreamBadResponse(
                name,
                f"the answer stream was cut off after {received} characters, before it was complete; "
                "the partial answer is not returned. Try again.",
            )
        return ChatResult(model=served_model, reply="".join(pieces), finish_reason=finish_reason or "stop", usage=usage)

    def _stream_too_slow(self, received: int) -> UpstreamTimeout:
        return UpstreamTimeout(
            self._upstream.name,
            f"the streamed answer took longer than {self._stream_timeout:g}s (ONLYSQ_MCP_STREAM_TIMEOUT) "
            f"and was abandoned after {received} characters. Ask for a shorter answer "
            "(e.g. a lower max_tokens), or raise the limit.",
        )

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


def generation_failed(model: str) -> str:
    return (
        f"model `{model}` reported a failed generation (finish_reason: error). "
        "Try again, rephrase, or use another model."
    )
