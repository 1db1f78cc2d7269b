"""Neutral turns and replies to and from the OpenAI chat format (`onlysq_mcp.openai_chat`) that both
chat providers speak."""

from __future__ import annotations

import base64

from ..openai_chat import ChatResult, ImagePart, ImageURL, Message, TextPart, Usage
from .base import ChatReply, InlineImage, Turn


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
    return ChatReply(result.model, result.reply, result.finish_reason, token_counts(result.usage))


def token_counts(usage: Usage | None) -> dict[str, int]:
    if usage is None:
        return {}
    return {k: v for k, v in usage.model_dump().items() if isinstance(v, int) and not isinstance(v, bool)}
