"""The image tools: `generate_image` (by the provider of the model) and `describe_image` (vision).

Generated images are saved exactly as received, offered as resources, and inlined only within the
result budget (a downscaled preview when the originals would not fit).
"""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Literal

import anyio
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult, ContentBlock, ImageContent, ResourceLink, TextContent
from pydantic import BaseModel, Field

from .client_log import client_log
from .errors import UpstreamBadResponse, UpstreamError
from .host_limits import image_defaults
from .image_jobs import JOB_PREFIX, ImageJob, JobRecord, JobRequest, JobStatus, TrackedJob
from .image_sources import ImageInputError, LoadedImage, load_image
from .images import (
    RESOURCE_PREFIX,
    ImageDecodeError,
    ImageTooLarge,
    Reencoded,
    SavedImage,
    decode_cost,
    encoded_size,
    measure,
    pixel_size,
    shrink,
    sniff_mime,
)
from .principals import owner_of, owner_prefix, principal_of
from .providers.base import ImageLimits, InlineImage, Provider, ProviderName, Turn
from .providers.registry import PROVIDERS
from .services import Services
from .session_images import announce_list_changed
from .settings import ImageDelivery
from .tool_support import host_profile, progress_of, provider_for, services_of, supports_resource_links
from .upstream import OnRetry, Pacer

# Seeds are unsigned 32-bit: the schema's bound, and where seed+i of a batch wraps around.
SEED_SPACE = 2**32
AspectRatio = Literal["1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "3:4", "4:3", "9:16", "9:21"]
MAX_IMAGE_PROMPT = 32_000
# A job handle is onlysq://jobs/ and 32 hex digits: room for spaces around it, nothing like a prompt.
MAX_JOB_HANDLE = 100
# Each provider's prompt limit, stated where the model reads the parameter.
PROMPT_LIMITS = "; ".join(
    f"{p.image_limits.max_prompt_chars:,} characters for {p.title} models" for p in PROVIDERS if p.image_limits
)
HEARTBEAT_SECONDS = 5.0
POLL_SECONDS = 0.1
SLOW_SECONDS = 20.0
VISION_INPUT_TYPES = frozenset({"image/png", "image/jpeg", "image/webp"})
PREVIEW_SIDE = 1024
DEFAULT_QUESTION = "Describe this image in detail."
UNDECODABLE = "cannot be decoded: it is corrupt or truncated"
PACED = (
    "The provider answered 429 (too many requests, e.g. a full queue), so the images were requested one at a "
    "time; if this repeats, ask for fewer images per call."
)


class ImageFile(BaseModel):
    uri: str | None = Field(
        description="Resource URI of the full-resolution file (readable with resources/read); null if not saved."
    )
    path: str | None = Field(
        description="Where the file is saved: a path on the server's disk, or an s3:// URL; null when saving "
        "failed (see `failures`): then the image exists only inline in this result."
    )
    url: str | None = Field(
        None, description="A temporary HTTPS link that fetches the full image, when the server makes them."
    )
    mime_type: str
    width: int | None
    height: int | None
    bytes: int = Field(description="Size of the image as received (and saved).")
    inline: Literal["original", "preview", "none"] = Field(
        description="What this result carries inline: the original, a downscaled preview, or no image data."
    )


class GenerateImageOutput(BaseModel):
    provider: ProviderName
    model: str
    prompt: str
    aspect_ratio: str
    seconds: float = Field(description="Wall time of the generation.")
    images: list[ImageFile]
    failures: list[str] = Field(description="Images that could not be generated, with the reason.")
    notes: list[str] = Field(
        default_factory=list, description="Remarks on the call: a seed not sent, images requested one at a time."
    )
    job: JobStatus | None = Field(
        None,
        description="Set when the generation outlasted its wait: call generate_image with `job` set to `job.uri` "
        "for the images (or read that resource).",
    )
    next_step: str | None = Field(None, description="What to do to get the images of a job still running.")


class DescribeImageOutput(BaseModel):
    answer: str
    model: str
    source: str = Field(description="Where the image came from.")
    mime_type: str
    width: int
    height: int
    downscaled: bool = Field(
        description="Whether a re-encoded copy was sent: smaller, or a still PNG/JPEG of a GIF (the original is never changed)."
    )


# The parameters of `generate_image`, as the model reads them.
ImagePrompt = Annotated[
    str | None,
    Field(
        min_length=1,
        max_length=MAX_IMAGE_PROMPT,
        description="What the picture should show: subject, style, composition, lighting. English works best. "
        f"At most {PROMPT_LIMITS}. Required, except when `job` is given.",
    ),
]
ImageModel = Annotated[
    str | None,
    Field(
        description=(
            "Image model id from `list_models` (kind `image`), e.g. `flux` (OnlySq), or a Yandex model "
            "such as `aliceai-image-art-3.0` or a full `art://<folder>/<model>` URI. Default: the server's."
        )
    ),
]
ImageCount = Annotated[
    int,
    Field(
        ge=1,
        le=4,
        description="How many images, 1–4: requested concurrently, or one at a time once the provider "
        "answers 429 (too many requests).",
    ),
]
Seed = Annotated[
    int | None,
    Field(
        ge=0,
        le=SEED_SPACE - 1,
        description="Optional seed, passed to the provider as it is; the provider may ignore it, so the same "
        "seed is not guaranteed to repeat a picture (where a provider takes no seed, it is dropped, with a "
        f"note). With `count` > 1 image i gets seed+i (wrapping to 0 after {SEED_SPACE - 1}), so the "
        "images differ.",
    ),
]
JobHandle = Annotated[
    str | None,
    Field(
        min_length=1,
        max_length=MAX_JOB_HANDLE,
        description="Collect a generation that was still running: the `job.uri` (onlysq://jobs/...) or job id "
        "an earlier call returned. Waits for it again and returns its images as that call would have; "
        "the other arguments are then ignored.",
    ),
]


async def generate_image(
    ctx: Context,
    prompt: ImagePrompt = None,
    model: ImageModel = None,
    aspect_ratio: Annotated[AspectRatio, Field(description="Width:height of the picture.")] = "1:1",
    count: ImageCount = 1,
    seed: Seed = None,
    job: JobHandle = None,
) -> Annotated[CallToolResult, GenerateImageOutput]:
    """Generate pictures from a text description and return them as images.

    Every image is saved in full by the server (on its disk or in its bucket) and offered as a
    resource (the result has its URI and where it is saved); the result itself carries the images
    inline, or downscaled previews when the originals are too big for one tool result. Takes seconds
    to a minute; a generation that takes longer returns a job handle instead: call this tool again
    with `job` set to it for the images.
    """
    services = services_of(ctx)
    # The wait bounds the whole call, as the host's time limit does: the checks before the upstream
    # request count against it too.
    deadline = anyio.current_time() + services.settings.onlysq_mcp_image_wait
    if job is not None:
        return await collect(ctx, services, await find_job(ctx, services, job), deadline)
    if prompt is None:
        raise ToolError(
            "Pass `prompt` (what the picture should show), or `job` (the handle of a generation still running)."
        )
    request = ImageRequest(prompt, model, aspect_ratio, count, seed)
    return await generate(ctx, services, request, deadline)


@dataclass(frozen=True)
class ImageRequest:
    """What a `generate_image` call asked for, before it is checked."""

    prompt: str
    model: str | None
    aspect_ratio: str
    count: int
    seed: int | None


async def generate(ctx: Context, services: Services, request: ImageRequest, deadline: float) -> CallToolResult:
    """A new generation: checked, started, and waited for until `deadline`; a job handle if it runs longer."""
    wait = services.settings.onlysq_mcp_image_wait
    progress = GenerationProgress(ctx, request.count)
    async with heartbeats(progress):
        order = image_order(services, request)
        try:
            await services.store.ensure_writable()
        except OSError as exc:
            raise ToolError(str(exc)) from None
        run = ImageRun(services, ctx, order)
        started = services.jobs.start(request.count, order.summary(), run.owner, run.produce)
        progress.job = started
        try:
            with anyio.move_on_at(deadline):
                await started.finished.wait()
        except anyio.get_cancelled_exc_class():
            # The caller gave up before a handle was returned: nobody could collect these images.
            started.cancel()
            raise
    await progress.report_finished()
    saved = started.saved
    started.detach()
    if saved and run.shelf is not None:
        await announce_list_changed(ctx, in_request=True)
    if not started.finished.is_set():
        # Stored before the handle goes out: the next call with it may reach another replica at once.
        await services.jobs.ledger.save(started)
        return pending_result(ctx, started.record(), wait)
    return await images_result(
        ctx, started.request, started.seconds, started.failures, saved, run.unsaved, paced=started.pacer.serial
    )


@dataclass(frozen=True)
class ImageOrder:
    """One `generate_image` call, checked and routed to its provider."""

    provider: Provider
    model: str
    prompt: str
    aspect_ratio: str
    seed: int | None
    notes: list[str]

    def summary(self) -> JobRequest:
        return JobRequest(
            provider=self.provider.name,
            model=self.model,
            prompt=self.prompt,
            aspect_ratio=self.aspect_ratio,
            notes=self.notes,
        )

    def generate(self, index: int, on_retry: OnRetry, pacer: Pacer) -> Awaitable[bytes]:
        """Image `index` of the call."""
        return self.provider.generate_image(
            self.model, self.prompt, self.aspect_ratio, seed=seed_for(self.seed, index), on_retry=on_retry, pacer=pacer
        )


def seed_for(seed: int | None, index: int) -> int | None:
    """The seed of image `index`: one per image, as the same seed for all would ask for one picture `count` times."""
    return None if seed is None else (seed + index) % SEED_SPACE


def image_order(services: Services, request: ImageRequest) -> ImageOrder:
    prompt, aspect_ratio, seed, count = request.prompt, request.aspect_ratio, request.seed, request.count
    if not prompt.strip():
        raise ToolError("`prompt` is empty: describe the picture to generate.")
    model_id = (request.model or services.settings.onlysq_image_model).strip()
    provider = provider_for(services, "image", model_id)
    limits = provider.image_limits
    assert limits is not None  # every provider offering images declares them (tests/test_providers.py)
    if problem := beyond_limits(limits, prompt, aspect_ratio, count):
        raise ToolError(f"{provider.title} cannot take this request: {problem}.")
    notes = []
    if seed is not None and not limits.seed:
        notes.append(f"`seed` was ignored: {provider.title}'s image API does not take one.")
        seed = None
    if seed is not None:
        seeds = ", ".join(str(seed_for(seed, i)) for i in range(count))
        notes.append(f"Seed sent: {seeds} ({provider.title} may ignore it).")
    return ImageOrder(provider, model_id, prompt, aspect_ratio, seed, notes)


def beyond_limits(limits: ImageLimits, prompt: str, aspect_ratio: str, count: int) -> str | None:
    """What in the request a provider cannot take, for one with tighter limits than the tool's schema."""
    if len(prompt) > limits.max_prompt_chars:
        return (
            f"`prompt` is {len(prompt):,} characters, at most {limits.max_prompt_chars:,} are allowed: "
            f"shorten it to {limits.max_prompt_chars:,} characters or fewer and call again"
        )
    if aspect_ratio not in limits.ratios:
        return f"`aspect_ratio` must be one of {', '.join(sorted(limits.ratios))}"
    if count > limits.max_count:
        return f"`count` must be at most {limits.max_count}"
    return None


class ImageRun:
    """Makes and keeps the images of one call; each image is one `produce` in the call's job."""

    def __init__(self, services: Services, ctx: Context, order: ImageOrder) -> None:
        self._services = services
        self._ctx = ctx
        self._order = order
        self._principal = principal_of(ctx)
        # Stored for this caller's principal, listed for its session only: nobody else sees its images or prompts.
        self.owner = owner_prefix(self._principal)
        self.shelf = services.session_images.shelf(ctx.session)
        # Images received but not written (a full disk): this call's result is the only place left for them.
        self.unsaved: list[tuple[bytes, str]] = []

    async def produce(self, job: ImageJob, index: int) -> None:
        max_pixels = self._services.settings.onlysq_mcp_max_input_pixels
        try:
            async with self._services.user_slots.slot(self._principal):
                data = await self._order.generate(index, while_attached(job, self._ctx), job.pacer)
            mime = await anyio.to_thread.run_sync(upstream_image, data, self._order.provider.label, max_pixels)
        except (UpstreamError, OSError) as exc:
            job.fail(str(exc))
            return
        await self.keep(job, data, mime)

    async def keep(self, job: ImageJob, data: bytes, mime: str) -> None:
        order = self._order
        try:
            image = await self._services.store.save(data, mime, order.prompt, self.owner)
        except OSError as exc:
            if job.detached:
                job.fail(f"an image was received but lost: {exc}")
            else:
                job.fail(f"an image was received but not saved: {exc}")
                self.unsaved.append((data, mime))
            return
        job.add(image, data)
        if self.shelf is not None:
            self.shelf.add(image, f"{order.provider.name}/{order.model}, {order.aspect_ratio}")
            # Images of a call still running are announced once it has them all (`generate_image`).
            if job.detached:
                await announce_list_changed(self._ctx, in_request=False)


@asynccontextmanager
async def heartbeats(progress: GenerationProgress) -> AsyncIterator[None]:
    """Progress notifications for as long as the block runs.

    A tool error of the block leaves as it is: raised inside a task group it would come out wrapped in an
    exception group, which the SDK reports as an unexpected failure.
    """
    error: Exception | None = None
    async with anyio.create_task_group() as group:
        group.start_soon(progress.follow)
        try:
            yield
        except Exception as exc:
            error = exc
        group.cancel_scope.cancel()
    if error is not None:
        raise error


async def find_job(ctx: Context, services: Services, handle: str) -> TrackedJob:
    """The caller's job of a handle as `generate_image` returned it: its URI, or the id alone."""
    job_id = handle.strip().removeprefix(JOB_PREFIX)
    job = await services.jobs.find(owner_of(ctx), job_id)
    if job is None:
        raise ToolError(
            f"`job`: no image generation `{job_id}` of yours is known to this server. Pass the `job.uri` a pending "
            "generate_image result gave you, or call generate_image with `prompt` to generate anew."
        )
    return job


async def collect(ctx: Context, services: Services, job: TrackedJob, deadline: float) -> CallToolResult:
    """A later call for a job, run here or by another replica: waits again, then answers as the call that
    started it would have.

    Cancelling this call leaves the job running: its handle is out, and another call may collect it.
    """
    progress = GenerationProgress(ctx, job.total)
    progress.job = job
    async with heartbeats(progress):
        await job.wait_until(deadline)
    await progress.report_finished()
    record = job.record()
    if record.status == "running":
        return pending_result(ctx, record, record.seconds)
    saved, failures = await reread(services, record, owner_of(ctx))
    return await images_result(ctx, record.request, record.seconds, failures, saved, [], paced=record.paced)


async def reread(services: Services, record: JobRecord, owner: str) -> tuple[list[tuple[SavedImage, bytes]], list[str]]:
    """A finished job's images with their bytes, read back from storage: once its first call has returned, a
    job keeps no image data in memory, and another replica never had it. Every call reads the same objects."""
    saved: list[tuple[SavedImage, bytes]] = []
    failures = list(record.failures)
    for entry in record.images:
        name = entry.uri.removeprefix(RESOURCE_PREFIX)
        try:
            data, mime = await services.store.open(name, owner)
        except OSError:
            failures.append(f"{entry.uri} was saved at {entry.path} but can no longer be read there")
            continue
        saved.append((SavedImage(owner + name, name, mime, len(data), entry.path), data))
    return saved, failures


async def images_result(
    ctx: Context,
    order: JobRequest,
    seconds: float,
    failures: list[str],
    saved: list[tuple[SavedImage, bytes]],
    unsaved: list[tuple[bytes, str]],
    *,
    paced: bool = False,
) -> CallToolResult:
    """The result for the client of `ctx`; `paced` when the upstream answered 429 and the images went one at a time.

    `resource_link` blocks only for a client that takes them (`supports_resource_links`); the text names
    each image's URI and path either way, for clients without them and for hosts that show only text.
    Image delivery and budget are the caller's host's defaults unless set (`host_limits.image_defaults`).
    """
    if not saved and not unsaved:
        raise ToolError("No image was generated. " + " | ".join(dict.fromkeys(failures)))
    services = services_of(ctx)
    settings = services.settings
    links = supports_resource_links(ctx)
    images = [data for _, data in saved] + [data for data, _ in unsaved]
    # Each host's own limit sets the defaults (Claude Code counts image data as tokens); settings still win.
    delivery, budget = image_defaults(settings, host_profile(ctx))
    max_pixels = settings.onlysq_mcp_max_input_pixels
    # A link signed with temporary credentials carries AWS_SESSION_TOKEN, which is masked like every secret: such
    # a link would arrive broken, so none is given (the image is still at its URI).
    urls = {
        image.name: url
        for image, _ in saved
        if (url := await services.store.link(image)) and services.redact(url) == url
    }
    # Previews of big images take real CPU time: off the event loop, so other calls keep flowing. They are
    # made one after another, so the largest image decides the memory this may take.
    blocks, files = await services.decodes.run(
        max(decode_cost(data) for data in images),
        lambda: deliver(saved, unsaved, delivery, budget, max_pixels, links=links, urls=urls),
    )
    output = GenerateImageOutput(
        provider=order.provider,
        model=order.model,
        prompt=order.prompt,
        aspect_ratio=order.aspect_ratio,
        seconds=seconds,
        images=files,
        failures=failures,
        notes=[*order.notes, *([PACED] if paced else [])],
    )
    return CallToolResult(
        content=[TextContent(type="text", text=summarize(output)), *blocks],
        structured_content=output.model_dump(mode="json"),
    )


ImageArgument = Annotated[
    str,
    Field(
        min_length=1,
        description=(
            "The image: a local file path (e.g. /home/me/cat.png or C:\\Users\\me\\cat.jpg), a file:// URI, "
            "an http(s) URL, a data:image/...;base64, URI, raw base64, or the onlysq://images/... URI of an "
            "image `generate_image` made. PNG, JPEG, WebP or GIF."
        ),
    ),
]

Question = Annotated[
    str,
    Field(min_length=1, max_length=10_000, description="What to ask about the image."),
]

VisionModel = Annotated[
    str | None,
    Field(description="Vision model id from `list_models` (kind `vision`, the Gemini family). Default: the server's."),
]


async def describe_image(
    image: ImageArgument,
    ctx: Context,
    question: Question = DEFAULT_QUESTION,
    model: VisionModel = None,
) -> Annotated[CallToolResult, DescribeImageOutput]:
    """Answer a question about an image with a vision model: describe it, read its text, compare details.

    Use it to look at a picture you cannot see yourself, such as a file on the user's disk, an image
    on the web, or one `generate_image` just made. Large images are downscaled before they are sent.
    """
    services = services_of(ctx)
    settings = services.settings
    if not question.strip():
        raise ToolError("`question` is empty: ask something about the image, or leave it out for a description.")
    model_id = (model or settings.onlysq_vision_model).strip()
    loaded, size = await image_to_describe(ctx, services, image)
    provider = provider_for(services, "vision", model_id)
    sent = await vision_copy(services, loaded, size)
    downscaled = sent is not None
    data, mime = (sent.data, sent.mime) if sent else (loaded.data, loaded.mime)
    result = await provider.chat(
        model_id,
        [Turn("user", question)],
        image=InlineImage(mime, data),
        on_delta=progress_of(ctx),
        on_retry=client_log(ctx),
    )
    output = DescribeImageOutput(
        answer=result.reply,
        model=result.model,
        source=loaded.source,
        mime_type=loaded.mime,
        width=size[0],
        height=size[1],
        downscaled=downscaled,
    )
    return CallToolResult(
        content=[TextContent(type="text", text=result.reply or "(the model returned an empty answer)")],
        structured_content=output.model_dump(mode="json"),
    )


async def image_to_describe(ctx: Context, services: Services, image: str) -> tuple[LoadedImage, tuple[int, int]]:
    """The caller's image and its size in pixels, refused with a tool error when unusable."""
    try:
        loaded = await load_image(
            image,
            store=services.store,
            owner=owner_of(ctx),
            http=services.downloads(),
            policy=services.input_policy,
        )
    except ImageInputError as exc:
        raise ToolError(f"Cannot use `image`: {exc}") from None
    try:
        size = await anyio.to_thread.run_sync(measure, loaded.data, services.settings.onlysq_mcp_max_input_pixels)
    except ImageTooLarge as exc:
        raise ToolError(f"Cannot use `image`: the {loaded.source} {exc}; pass a smaller image.") from None
    except ImageDecodeError:
        raise ToolError(f"Cannot use `image`: the {loaded.source} {UNDECODABLE}.") from None
    return loaded, size


async def vision_copy(services: Services, loaded: LoadedImage, size: tuple[int, int]) -> Reencoded | None:
    """A smaller or still copy to send instead of the image, or None when the image goes as it is."""
    settings = services.settings
    too_big = max(size) > settings.onlysq_mcp_vision_max_side or len(loaded.data) > settings.onlysq_mcp_vision_max_bytes
    # Vision models document PNG, JPEG and WebP input; a GIF goes as a still copy of its first frame.
    if not too_big and loaded.mime in VISION_INPUT_TYPES:
        return None
    try:
        return await services.decodes.run(
            decode_cost(loaded.data),
            lambda: shrink(
                loaded.data,
                max_side=settings.onlysq_mcp_vision_max_side,
                max_bytes=settings.onlysq_mcp_vision_max_bytes,
                max_pixels=settings.onlysq_mcp_max_input_pixels,
            ),
        )
    except ImageDecodeError:
        raise ToolError(f"Cannot use `image`: the {loaded.source} {UNDECODABLE}.") from None


class GenerationProgress:
    """Reports a job's images as they finish, with a heartbeat in between; the value only ever grows.

    The first notification goes out at once, before the model check and the upstream request: a host that
    times out requests without progress must see the call alive whatever is slow.
    """

    def __init__(self, ctx: Context, total: int) -> None:
        self._ctx = ctx
        self._total = total
        self._started = time.monotonic()
        self._reported = 0
        # Set once the upstream requests start (at once for a call collecting a job).
        self.job: TrackedJob | None = None

    async def follow(self) -> None:
        beats = 0
        slow_noted = False
        if not await self.report_finished():
            await self.beat(beats)
        last = time.monotonic()
        while True:
            await anyio.sleep(POLL_SECONDS)
            now = time.monotonic()
            job = self.job
            if job is not None and not slow_noted and job.seconds >= SLOW_SECONDS:
                slow_noted = True
                note = f"generate_image: the upstream is slow, {job.done_count} of {job.total} images after {SLOW_SECONDS:g}s"
                await client_log(self._ctx, "notice")(note)
            if await self.report_finished():
                last, beats = now, 0
            elif now - last >= HEARTBEAT_SECONDS:
                last, beats = now, beats + 1
                await self.beat(beats)

    async def beat(self, beats: int) -> None:
        # So hosts with a request timeout see the call is alive. Creeps towards the next whole image without
        # reaching it, so a finished image still counts up.
        waited = self.job.seconds if self.job is not None else time.monotonic() - self._started
        value = self._reported + 1 - 1 / (beats + 1)
        await self._ctx.report_progress(value, self._total, f"generating… {waited:.0f}s")

    async def report_finished(self) -> bool:
        job = self.job
        if job is None or job.done_count <= self._reported:
            return False
        self._reported = job.done_count
        ready = job.ready_count
        await self._ctx.report_progress(self._reported, self._total, f"{ready} of {self._total} images ready")
        return True


def while_attached(job: ImageJob, ctx: Context) -> OnRetry:
    """Retry notices go to the client only while its call is still open."""
    send = client_log(ctx)

    async def note(text: str) -> None:
        if not job.detached:
            await send(text)

    return note


def pending_result(ctx: Context, job: JobRecord, waited: float) -> CallToolResult:
    """The job handle of a generation that outlasted its wait, for the client of `ctx` (as `images_result`)."""
    status = job.public()
    order = job.request
    # Hosts that cannot read resources (Claude Desktop) can still call the tool again: that comes first.
    next_step = (
        f'To get the images, call generate_image again with `job` set to "{job.uri}": it waits again and returns '
        f"them, or this handle if they are still not ready. The resource {job.uri} lists them too (status "
        "`running` until then)."
    )
    output = GenerateImageOutput(
        provider=order.provider,
        model=order.model,
        prompt=order.prompt,
        aspect_ratio=order.aspect_ratio,
        seconds=status.seconds,
        images=[],
        failures=status.failures,
        notes=order.notes,
        job=status,
        next_step=next_step,
    )
    text = (
        f"The images are still being generated after {waited:g}s, so this call returns now rather than run into "
        "the host's time limit. Nothing is lost: each image is saved when ready. "
        f"{len(status.images)} of {status.total} ready so far. {next_step}"
    )
    content: list[ContentBlock] = [TextContent(type="text", text=text)]
    if supports_resource_links(ctx):
        content.append(
            ResourceLink(
                type="resource_link",
                uri=job.uri,
                name=f"image-job-{job.id}",
                mime_type="application/json",
                description="Status of this generation and, when done, its images.",
            )
        )
    return CallToolResult(content=content, structured_content=output.model_dump(mode="json"))


def deliver(
    saved: list[tuple[SavedImage, bytes]],
    unsaved: list[tuple[bytes, str]],
    mode: ImageDelivery,
    budget: int,
    max_pixels: int,
    *,
    links: bool,
    urls: dict[str, str],
) -> tuple[list[ContentBlock], list[ImageFile]]:
    """Content blocks for the images, keeping the base64 of all inline images within `budget` bytes.

    An image that could not be saved is inlined whatever `mode` says: it exists nowhere else. A saved
    image also gets a `resource_link` block when the client takes them (`links`).
    """
    entries: list[tuple[SavedImage | None, bytes, str]] = [(image, data, image.mime) for image, data in saved]
    entries += [(None, data, mime) for data, mime in unsaved]
    shown_entries = [entry for entry in entries if mode != ImageDelivery.LINK or entry[0] is None]
    total_encoded = sum(encoded_size(len(data)) for _, data, _ in shown_entries)
    originals_fit = mode == ImageDelivery.INLINE or total_encoded <= budget
    # Each preview gets an equal share of the budget: whole base64 quads, 3 bytes for every 4 characters.
    share = (budget // max(1, len(shown_entries))) // 4 * 3
    blocks: list[ContentBlock] = []
    files: list[ImageFile] = []
    for image, data, mime in entries:
        size = pixel_size(data)
        inline: Literal["original", "preview", "none"] = "none"
        shown: tuple[bytes, str] | None = None
        if mode != ImageDelivery.LINK or image is None:
            if originals_fit:
                shown, inline = (data, mime), "original"
            elif small := preview(data, share, max_pixels):
                shown, inline = (small.data, small.mime), "preview"
        if shown is not None:
            payload, shown_mime = shown
            blocks.append(
                ImageContent(type="image", data=base64.b64encode(payload).decode("ascii"), mime_type=shown_mime)
            )
        if image is not None and links:
            blocks.append(link_to(image))
        files.append(
            ImageFile(
                uri=image.uri if image else None,
                path=image.location if image else None,
                url=urls.get(image.name) if image else None,
                mime_type=mime,
                width=size[0] if size else None,
                height=size[1] if size else None,
                bytes=len(data),
                inline=inline,
            )
        )
    return blocks, files


def link_to(image: SavedImage) -> ResourceLink:
    return ResourceLink(
        type="resource_link",
        uri=image.uri,
        name=image.name,
        mime_type=image.mime,
        size=image.size_bytes,
        description=f"Full-resolution image, saved at {image.location}",
    )


def preview(data: bytes, max_bytes: int, max_pixels: int) -> Reencoded | None:
    """A downscaled copy of at most `max_bytes`, or None when the image cannot be made that small."""
    try:
        small = shrink(data, max_side=PREVIEW_SIDE, max_bytes=max_bytes, max_pixels=max_pixels)
    except ImageDecodeError:
        return None
    return small if len(small.data) <= max_bytes else None


def upstream_image(data: bytes, upstream: str, max_pixels: int) -> str:
    """The type of an image an upstream returned, checked as a caller's image is before it is kept.

    One over the pixel limit is discarded, not saved: a generator does not make 40 Mpx pictures, and a
    file that declares them is broken or hostile. One whose header cannot be read is saved as received
    (it is never decoded: no size, no preview).
    """
    mime = sniff_mime(data)
    if mime is None:
        raise UpstreamBadResponse(upstream, "returned data that is not a PNG, JPEG, WebP or GIF image")
    try:
        measure(data, max_pixels)
    except ImageTooLarge as exc:
        raise UpstreamBadResponse(upstream, f"returned an image that {exc}; it was discarded, not saved") from None
    except ImageDecodeError:
        pass
    return mime


def summarize(output: GenerateImageOutput) -> str:
    n = len(output.images)
    lines = [
        f"Generated {n} image{'s' if n != 1 else ''} with {output.provider}/{output.model} in {output.seconds:g}s."
    ]
    for i, f in enumerate(output.images, 1):
        dims = f"{f.width}x{f.height}" if f.width else "unknown size"
        if f.path is None:
            where = (
                "NOT saved (see the failure below); "
                + {
                    "original": "this result is its only copy, shown inline",
                    "preview": "only a downscaled preview survives, shown inline",
                    "none": "too large to inline, so it is lost",
                }[f.inline]
            )
        else:
            where = (
                f"saved to {f.path} ({f.uri}); "
                + {
                    "original": "shown inline",
                    "preview": "a downscaled preview is shown inline; the full-resolution file is on disk and at the URI",
                    "none": "not inlined; read it from the URI or the path",
                }[f.inline]
            )
        lines.append(f"{i}. {dims} {f.mime_type}, {f.bytes:,} bytes, {where}.")
    lines.extend(f"Failed: {failure}" for failure in output.failures)
    lines.extend(output.notes)
    return "\n".join(lines)
