"""Neutral turns and replies to and from the OpenAI chat format (`onlysq_mcp.openai_chat`) that both
chat providers speak, and the `chat` of a provider whose client speaks it."""

from __future__ import annotations

import base64
from typing import Protocol

from ..openai_chat import ChatResult, ImagePart, ImageURL, Message, TextPart, Usage
from ..settings import StreamMode
from ..upstream import OnRetry
from .base import ChatReply, InlineImage, OnDelta, Provider, Turn


class OpenAIChatClient(Protocol):
    async def chat(
        self,
        model: str,
        messages: list[Message],
        *,
        stream: bool,
        temperature: float | None = None,
        max_tokens: int | None = None,
        on_delta: OnDelta | None = None,
        on_retry: OnRetry | None = None,
    ) -> ChatResult: ...


class OpenAIChatProvider(Provider):
    """A provider whose client takes OpenAI chat messages: its `chat` maps turns and reply, and chooses
    whether the answer is streamed."""

    client: OpenAIChatClient
    # ONLYSQ_STREAM. A stream costs more to read than one JSON body (an event per piece, each parsed), and
    # is worth it only when its pieces go somewhere: to a caller who asked for progress (`on_delta`).
    stream_mode: StreamMode

    async def chat(
        self,
        model: str,
        turns: list[Turn],
        *,
        image: InlineImage | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        on_delta: OnDelta | None = None,
        on_retry: OnRetry | None = None,
    ) -> ChatReply:
        stream = self.stream_mode.streams(progress=on_delta is not None)
        result = await self.client.chat(
            model,
            messages_for(turns, image),
            stream=stream,
            temperature=temperature,
            max_tokens=max_tokens,
            on_delta=on_delta,
            on_retry=on_retry,
        )
        return reply_of(result)


def messages_for(turns: list[Turn], image: InlineImage | None = None) -> list[Message]:
    """The turns as messages; `image` goes with the last one."""
    messages = [Message(role=turn.role, content=turn.text) for turn in turns]
    if image is not None:
        # OpenAI-style content parts: the question, then the image as a data URI.
        data_uri = f"data:{image.mime};base64,{base64.b64encode(image.data).decode('ascii')}"
        messages[-1] = Message(
            role=messages[-1].role,
            content=[TextPart(text=turns[-1].text), ImagePart(image_url=ImageURL(url=data_uri))],
        )
    return messages


def reply_of(result: ChatResult) -> ChatReply:
    return ChatReply(result.model, result.reply, result.finish_reason, token_counts(result.usage), result.note)


def token_counts(usage: Usage | None) -> dict[str, int]:
    if usage is None:
        return {}
    return {k: v for k, v in usage.model_dump().items() if isinstance(v, int) and not isinstance(v, bool)}
