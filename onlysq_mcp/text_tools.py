"""The text tools: `chat` (ask a chat model) and `list_models` (the catalogue).

Docstrings and `Field` descriptions are what the calling model reads: they say what each tool is for,
when to use it, and the limits of every parameter.
"""

from __future__ import annotations

from typing import Annotated, Literal

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult, TextContent
from pydantic import BaseModel, Field

from .catalogue import KindFilter, ModelEntry
from .client_log import client_log
from .providers.base import Turn
from .tool_support import progress_of, provider_for, services_of

MAX_PROMPT_CHARS = 100_000
MAX_TURNS = 200
# Most bytes of the text part of `list_models`: every call puts it in the model's context, and the live list
# has over a hundred models. The structured part always has every entry.
MAX_LIST_TEXT = 4096
# Kinds no tool of this server uses, said where their ids are listed.
UNUSABLE_KINDS = {"embedding": "makes vectors, not for `chat`", "sound": "not used by these tools"}


class ChatTurn(BaseModel):
    role: Literal["system", "user", "assistant"] = Field(
        description="`user` for what the person said, `assistant` for what the model answered, `system` for instructions."
    )
    content: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS, description="The text of this turn.")


class ChatOutput(BaseModel):
    model: str = Field(description="The model that answered.")
    reply: str = Field(description="The model's answer.")
    finish_reason: str = Field(
        description="`stop` when the answer is complete; `length` when cut by max_tokens; `unknown` when the "
        "upstream did not say (see `note`)."
    )
    # A flat mapping rather than a nested model: clients validate this schema once per session, and a
    # `$ref` inside an `anyOf` makes that several times slower.
    usage: dict[str, int] = Field(
        default_factory=dict,
        description="Token counts when the upstream reports them: prompt_tokens, completion_tokens, total_tokens.",
    )
    note: str | None = Field(None, description="Why the reply may be incomplete, when it may be.")


class ModelList(BaseModel):
    source: Literal["live", "cached", "bundled"] = Field(
        description="`live` from the upstream, `cached` last good copy, `bundled` shipped with the server."
    )
    note: str | None = Field(
        None, description="Why the list is not live or not complete: fallbacks, unreadable or hidden entries."
    )
    total: int = Field(description="How many models matched.")
    models: list[ModelEntry]


Prompt = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_PROMPT_CHARS,
        description=f"The message to send to the model (the newest user turn). At most {MAX_PROMPT_CHARS:,} characters.",
    ),
]

SystemPrompt = Annotated[
    str | None,
    Field(
        max_length=MAX_PROMPT_CHARS,
        description="Optional instructions for the model (a system prompt), e.g. 'Answer in one sentence.'",
    ),
]

EarlierTurns = Annotated[
    list[ChatTurn] | None,
    Field(
        max_length=MAX_TURNS,
        description=(
            "Optional earlier turns of the conversation, oldest first, to continue it; "
            f"`prompt` is appended as the newest user turn. At most {MAX_TURNS} turns."
        ),
    ),
]

ChatModel = Annotated[
    str | None,
    Field(description="Chat model id from `list_models` (kind `chat`). Default: the server's chat model."),
]

# OnlySq's API2.0 documents neither field inside `request`, and no public client sends them: they are passed
# through, never promised (Yandex's OpenAI-compatible chat documents both, `openai-compatibility.md`).
Temperature = Annotated[
    float | None,
    Field(
        ge=0,
        le=2,
        description="Sampling temperature 0–2; lower is more focused. Passed to the provider as is; not "
        "every provider honours it. Default: the model's own.",
    ),
]

MaxTokens = Annotated[
    int | None,
    Field(
        ge=1,
        le=100_000,
        description="Upper bound on the reply length in tokens. Passed to the provider as is; not "
        "every provider honours it. Default: the model's own.",
    ),
]


async def chat(
    prompt: Prompt,
    ctx: Context,
    system: SystemPrompt = None,
    messages: EarlierTurns = None,
    model: ChatModel = None,
    temperature: Temperature = None,
    max_tokens: MaxTokens = None,
) -> Annotated[CallToolResult, ChatOutput]:
    """Ask a chat model (GPT, Gemini, Claude, DeepSeek, Llama, Qwen, ... on OnlySq; YandexGPT and Alice AI LLM
    when Yandex AI Studio is configured) and get its text reply.

    Use it for a second opinion from another model, a translation, a draft, or anything a language
    model answers in text. For one question, pass only `prompt`; to continue a conversation, pass
    the earlier turns in `messages`. Returns the reply as text, plus the model, finish reason and
    token usage as structured data.
    """
    services = services_of(ctx)
    if not prompt.strip():
        raise ToolError("`prompt` is empty: pass the message the model should answer.")
    model_id = (model or services.settings.onlysq_chat_model).strip()
    provider = provider_for(services, "chat", model_id)
    turns = [Turn("system", system)] if system and system.strip() else []
    turns += [Turn(turn.role, turn.content) for turn in messages or []]
    turns.append(Turn("user", prompt))
    result = await provider.chat(
        model_id,
        turns,
        temperature=temperature,
        max_tokens=max_tokens,
        on_delta=progress_of(ctx),
        on_retry=client_log(ctx),
    )
    output = ChatOutput(
        model=result.model, reply=result.reply, finish_reason=result.finish_reason, usage=result.usage, note=result.note
    )
    text = result.reply or "(the model returned an empty reply)"
    if result.finish_reason == "length":
        text += "\n\n[The reply was cut off at max_tokens.]"
    if result.note:
        text += f"\n\n[{result.note}]"
    return CallToolResult(
        content=[TextContent(type="text", text=text)],
        structured_content=output.model_dump(mode="json"),
    )


async def list_models(
    ctx: Context,
    kind: Annotated[
        KindFilter,
        Field(
            description=(
                "`chat` text models (for `chat`), `vision` models that understand images, "
                "`image` image generators, or `all`."
            )
        ),
    ] = "all",
    search: Annotated[
        str | None,
        Field(
            max_length=200,
            description="Optional text to match in the id, name, description or maker, e.g. 'gemini'.",
        ),
    ] = None,
) -> Annotated[CallToolResult, ModelList]:
    """List the models the upstreams offer, to pick a `model` for the other tools.

    Returns one entry per model (id, provider, kind, name, description, flags such as streaming,
    tool use and vision, status, access tier) as structured data, plus a short text: the ids grouped
    by kind, or a table when `kind` or `search` leaves few. Only models the service reports as
    working (status `work` or `beta`) are listed; `embedding` models make vectors and cannot be used
    with `chat`. The list is fetched live and cached; if the service
    cannot be reached, the last good copy or a bundled list is returned and `source` says which.
    """
    catalogue = await services_of(ctx).catalogue.get()
    chosen = catalogue.select(kind, search)
    result = ModelList(source=catalogue.source, note=catalogue.note, total=len(chosen), models=chosen)
    return CallToolResult(
        content=[TextContent(type="text", text=models_text(result, kind, search))],
        structured_content=result.model_dump(mode="json"),
    )


def models_text(result: ModelList, kind: str, search: str | None) -> str:
    """The text part, at most MAX_LIST_TEXT bytes: a table when a filter leaves a list that small, else the
    ids grouped by kind."""
    # The note can quote an upstream's error: a quarter of the budget at most.
    head = [clip(result.note, MAX_LIST_TEXT // 4)] if result.note else []
    if not result.models:
        return "\n".join([*head, f"No models match kind `{kind}`" + (f" and search `{search}`." if search else ".")])
    if kind != "all" or search:
        table = "\n".join([*head, *model_table(result)])
        if size(table) <= MAX_LIST_TEXT:
            return table
    budget = MAX_LIST_TEXT - sum(size(line) + 1 for line in head)
    return "\n".join([*head, *model_groups(result, budget)])


def model_table(result: ModelList) -> list[str]:
    lines = [f"{result.total} models ({result.source}):", "id | provider | kind | tier | flags | name"]
    for m in result.models:
        flags = ",".join(
            flag
            for flag, on in (
                ("vision", m.vision),
                ("stream", m.streaming),
                ("tools", m.tools),
                ("beta", m.status == "beta"),
            )
            if on
        )
        tier = "-" if m.tier is None else m.tier
        lines.append(f"{m.id} | {m.provider} | {m.kind} | {tier} | {flags or '-'} | {m.name}")
    return lines


def model_groups(result: ModelList, budget: int) -> list[str]:
    """One line of ids per kind, in at most `budget` bytes: the kinds are filled smallest first, each with an
    equal share of what is left, so a few image models are never crowded out by a hundred chat models."""
    first = (
        f"{result.total} models ({result.source}), ids by kind. Marks: v accepts images (for `describe_image`), "
        "beta, tN access tier N (a key of a lower tier may be refused)."
    )
    last = "Names, descriptions and every flag: the structured result, or `list_models` with `kind` or `search`."
    budget -= size(first) + size(last) + 2
    groups: dict[str, list[str]] = {}
    for model in result.models:
        groups.setdefault(model.kind, []).append(marked(model))
    lines: dict[str, str] = {}
    for done, (kind, ids) in enumerate(sorted(groups.items(), key=lambda group: len(group[1]))):
        lines[kind] = id_line(kind, ids, budget // (len(groups) - done))
        budget -= size(lines[kind]) + 1
    return [first, *(lines[kind] for kind in groups), last]


def marked(model: ModelEntry) -> str:
    marks = [mark for mark, on in (("v", model.vision), ("beta", model.status == "beta")) if on]
    if model.tier:
        marks.append(f"t{model.tier}")
    return f"{model.id}[{','.join(marks)}]" if marks else model.id


def id_line(kind: str, ids: list[str], share: int) -> str:
    """`kind (count): id, id, ...` in `share` bytes, ending `… +N more` when not every id fits."""
    unusable = f", {UNUSABLE_KINDS[kind]}" if kind in UNUSABLE_KINDS else ""
    line = f"{kind} ({len(ids)}{unusable}):"
    more = f" … +{len(ids)} more"
    for shown, model_id in enumerate(ids):
        entry = f"{',' if shown else ''} {model_id}"
        # Room is kept for the `more` ending unless this is the last id.
        if size(line) + size(entry) + (0 if shown == len(ids) - 1 else size(more)) > share:
            return f"{line}{',' if shown else ''} … +{len(ids) - shown} more"
        line += entry
    return line


def size(text: str) -> int:
    return len(text.encode())


def clip(text: str, limit: int) -> str:
    """`text` cut to at most `limit` bytes of UTF-8, marked with … when cut."""
    if size(text) <= limit:
        return text
    return text.encode()[: limit - size("…")].decode(errors="ignore") + "…"
