"""The MCP tools: thin functions that validate arguments, call an upstream client and shape the result.

Docstrings and `Field` descriptions are what the calling model reads: they say what each tool is for,
when to use it, and the limits of every parameter.
"""

from __future__ import annotations

import inspect
import logging
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar, cast

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult, LoggingLevel, TextContent, ToolAnnotations
from pydantic import BaseModel, Field

from .catalogue import Catalogue, KindFilter, ModelEntry, is_kind
from .errors import UpstreamError
from .onlysq import Message, Usage
from .upstream import OnRetry

if TYPE_CHECKING:
    from .server import Runtime, Services

F = TypeVar("F", bound=Callable[..., Any])
logger = logging.getLogger(__name__)

MAX_PROMPT_CHARS = 100_000
MAX_TURNS = 200
# Progress while a reply streams in: the first piece at once, then at most this often.
PROGRESS_INTERVAL = 0.25


class ChatTurn(BaseModel):
    role: Literal["system", "user", "assistant"] = Field(
        description="`user` for what the person said, `assistant` for what the model answered, `system` for instructions."
    )
    content: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS, description="The text of this turn.")


class ChatOutput(BaseModel):
    model: str = Field(description="The model that answered.")
    reply: str = Field(description="The model's answer.")
    finish_reason: str = Field(description="`stop` when the answer is complete; `length` when cut by max_tokens.")
    # A flat mapping rather than a nested model: clients validate this schema once per session, and a
    # `$ref` inside an `anyOf` makes that several times slower.
    usage: dict[str, int] = Field(
        default_factory=dict,
        description="Token counts when the upstream reports them: prompt_tokens, completion_tokens, total_tokens.",
    )


class ModelList(BaseModel):
    source: Literal["live", "cached", "bundled"] = Field(
        description="`live` from the upstream, `cached` last good copy, `bundled` shipped with the server."
    )
    note: str | None = Field(None, description="Why the list is not live, when it is not.")
    total: int = Field(description="How many models matched.")
    models: list[ModelEntry]


def tool(server: MCPServer, **options: Any) -> Callable[[F], F]:
    """`server.tool()`, with the docstring dedented: it is the description the model reads."""

    def decorator(fn: F) -> F:
        server.add_tool(fn, description=inspect.cleandoc(fn.__doc__ or ""), **options)
        return fn

    return decorator


def register(server: MCPServer, runtime: Runtime) -> None:
    @tool(
        server,
        title="Chat with an OnlySq model",
        annotations=ToolAnnotations(
            read_only_hint=True, destructive_hint=False, idempotent_hint=False, open_world_hint=True
        ),
    )
    async def chat(
        prompt: Annotated[
            str,
            Field(
                min_length=1,
                max_length=MAX_PROMPT_CHARS,
                description=f"The message to send to the model (the newest user turn). At most {MAX_PROMPT_CHARS:,} characters.",
            ),
        ],
        ctx: Context,
        system: Annotated[
            str | None,
            Field(
                max_length=MAX_PROMPT_CHARS,
                description="Optional instructions for the model (a system prompt), e.g. 'Answer in one sentence.'",
            ),
        ] = None,
        messages: Annotated[
            list[ChatTurn] | None,
            Field(
                max_length=MAX_TURNS,
                description=(
                    "Optional earlier turns of the conversation, oldest first, to continue it; "
                    f"`prompt` is appended as the newest user turn. At most {MAX_TURNS} turns."
                ),
            ),
        ] = None,
        model: Annotated[
            str | None,
            Field(description="Chat model id from `list_models` (kind `chat`). Default: the server's chat model."),
        ] = None,
        temperature: Annotated[
            float | None,
            Field(ge=0, le=2, description="Sampling temperature 0–2; lower is more focused. Default: the model's own."),
        ] = None,
        max_tokens: Annotated[
            int | None,
            Field(ge=1, le=100_000, description="Upper bound on the reply length in tokens. Default: the model's own."),
        ] = None,
    ) -> Annotated[CallToolResult, ChatOutput]:
        """Ask an OnlySq chat model (GPT, Gemini, Claude, DeepSeek, Llama, Qwen, ...) and get its text reply.

        Use it for a second opinion from another model, a translation, a draft, or anything a language
        model answers in text. For one question, pass only `prompt`; to continue a conversation, pass
        the earlier turns in `messages`. Returns the reply as text, plus the model, finish reason and
        token usage as structured data.
        """
        services = runtime.services
        if not prompt.strip():
            raise ToolError("`prompt` is empty: pass the message the model should answer.")
        model_id = (model or services.settings.onlysq_chat_model).strip()
        await check_model(runtime, model_id, "chat")
        conversation: list[Message] = []
        if system and system.strip():
            conversation.append(Message(role="system", content=system))
        conversation.extend(Message(role=turn.role, content=turn.content) for turn in messages or [])
        conversation.append(Message(role="user", content=prompt))

        progress = StreamProgress(ctx)
        with upstream_errors("chat"):
            result = await services.onlysq.chat(
                model_id,
                conversation,
                temperature=temperature,
                max_tokens=max_tokens,
                on_delta=progress.on_delta,
                on_retry=client_log(ctx),
            )
        output = ChatOutput(
            model=result.model, reply=result.reply, finish_reason=result.finish_reason, usage=token_counts(result.usage)
        )
        text = result.reply or "(the model returned an empty reply)"
        if result.finish_reason == "length":
            text += "\n\n[The reply was cut off at max_tokens.]"
        return CallToolResult(
            content=[TextContent(type="text", text=text)],
            structured_content=output.model_dump(mode="json"),
        )

    @tool(
        server,
        title="List available models",
        annotations=ToolAnnotations(
            read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=True
        ),
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
        tool use and vision, status) as structured data, plus a compact table. The list is fetched
        live and cached; if the service cannot be reached, the last good copy or a bundled list is
        returned and `source` says which.
        """
        catalogue = await runtime.services.catalogue.get()
        chosen = catalogue.select(kind, search)
        result = ModelList(source=catalogue.source, note=catalogue.note, total=len(chosen), models=chosen)
        return CallToolResult(
            content=[TextContent(type="text", text=model_table(result, kind, search))],
            structured_content=result.model_dump(mode="json"),
        )


async def check_model(runtime: Runtime, model_id: str, kind: KindFilter) -> ModelEntry | None:
    """Refuse a model the live catalogue does not list for this kind, before any upstream call.

    When only a cached or bundled catalogue is at hand the upstream gets the last word, since the
    model may be newer than the list.
    """
    if not model_id:
        raise ToolError("`model` is empty: pass a model id from `list_models`, or leave it out for the default.")
    catalogue: Catalogue = await runtime.services.catalogue.get()
    entry = catalogue.find(model_id)
    if entry is not None and is_kind(entry, kind):
        return entry
    if catalogue.source != "live":
        return None
    wanted = {"chat": "a chat model", "vision": "a vision model", "image": "an image model", "all": "a model"}[kind]
    if entry is not None:
        problem = f"`{model_id}` is a {entry.kind} model, but this tool needs {wanted}."
    else:
        problem = f"Unknown model `{model_id}`; this tool needs {wanted}."
    suggestions = catalogue.closest(model_id, kind)
    hint = (
        "Did you mean " + " or ".join(f"`{s}`" for s in suggestions) + "?"
        if suggestions
        else f"Call `list_models` with kind `{kind}` to see the choices."
    )
    raise ToolError(f"{problem} {hint}")


@contextmanager
def upstream_errors(tool: str) -> Iterator[None]:
    """Turns what an upstream call raises into a tool error the caller can act on.

    Anything other than an `UpstreamError` is a fault of this server: its traceback goes to the log on
    stderr, and the caller gets a message instead of the SDK's bare "Error executing tool".
    """
    try:
        yield
    except UpstreamError as exc:
        raise ToolError(str(exc)) from None
    except ToolError:
        raise
    except Exception as exc:
        logger.exception("%s failed unexpectedly", tool)
        raise ToolError(
            f"{tool} failed because of an unexpected error on this server ({type(exc).__name__}); the traceback "
            "is in the server's log. Try again; if it keeps failing, report it."
        ) from None


def token_counts(usage: Usage | None) -> dict[str, int]:
    if usage is None:
        return {}
    return {k: v for k, v in usage.model_dump().items() if isinstance(v, int) and not isinstance(v, bool)}


def model_table(result: ModelList, kind: str, search: str | None) -> str:
    lines = []
    if result.note:
        lines.append(result.note)
    if not result.models:
        lines.append(f"No models match kind `{kind}`" + (f" and search `{search}`." if search else "."))
        return "\n".join(lines)
    lines.append(f"{result.total} models ({result.source}):")
    lines.append("id | provider | kind | flags | name")
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
        lines.append(f"{m.id} | {m.provider} | {m.kind} | {flags or '-'} | {m.name}")
    return "\n".join(lines)


class StreamProgress:
    """Turns arriving pieces of a reply into progress notifications, without flooding the client."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._chars = 0
        self._last = 0.0

    async def on_delta(self, piece: str) -> None:
        self._chars += len(piece)
        now = time.monotonic()
        if self._last and now - self._last < PROGRESS_INTERVAL:
            return
        self._last = now
        await self._ctx.report_progress(self._chars, None, f"received {self._chars} characters")


LOG_LEVELS: tuple[LoggingLevel, ...] = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")
# The level each client connection asked for with `logging/setLevel`; a connection that never asked gets all.
client_log_levels: weakref.WeakKeyDictionary[object, LoggingLevel] = weakref.WeakKeyDictionary()


def connection_of(session: object) -> object:
    # The SDK hands out one session object per request; the connection behind it is what a level belongs to.
    return getattr(session, "_connection", session)


def client_log(ctx: Context, level: LoggingLevel = "warning") -> OnRetry:
    """Sends notes to the host's log, e.g. retries and slow upstreams: why a call takes longer than usual.

    The one way log messages reach the client, so the notes are masked of secrets here.
    """

    async def send(note: str) -> None:
        wanted = client_log_levels.get(connection_of(ctx.request_context.session), "debug")
        if LOG_LEVELS.index(level) >= LOG_LEVELS.index(wanted):
            # The lifespan of the server is its `Services` (server.Runtime.run).
            services = cast("Services", ctx.request_context.lifespan_context)
            await ctx.log(level, services.redact(note), logger_name="onlysq_mcp.upstream")

    return send
