"""Image generations that may outlive the tool call that started them.

A generation runs in the server's own task group, not in the request. When it takes longer than
`ONLYSQ_MCP_IMAGE_WAIT`, `generate_image` returns a job handle instead of letting the host's request time
out; the images still land in the output folder, and the job's resource lists them once they are ready. A
later `generate_image` call with the handle waits again and answers as the first call would have: the job
keeps the request it was made for.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, Generic, Literal, TypeVar

import anyio
import anyio.abc
from pydantic import BaseModel, Field

from .images import SavedImage

logger = logging.getLogger(__name__)

JOB_PREFIX = "onlysq://jobs/"
UNEXPECTED = "an unexpected error on this server (the traceback is in its log); try again"
# What a job was started for (the tool's checked request), kept for the call that collects its images.
Request = TypeVar("Request")
# Makes the image of the given index (0 to total - 1) for the job.
Producer = Callable[["ImageJob[Request]", int], Coroutine[Any, Any, None]]
KEEP_JOBS = 200


class JobImage(BaseModel):
    uri: str
    path: str
    mime_type: str
    bytes: int


class JobStatus(BaseModel):
    id: str
    uri: str = Field(description="Read this resource for the job's status and, once done, its images.")
    status: Literal["running", "done", "failed", "cancelled"]
    total: int = Field(description="Images asked for.")
    images: list[JobImage] = Field(description="Images saved so far (each also an onlysq://images/... resource).")
    failures: list[str]
    seconds: float = Field(description="Time since the job started, or its duration once finished.")


class BatchPacer:
    """The upstream requests of one call's images: all at once until one is answered 429, then one at a time.

    OnlySq answers 429 when its provider queue is full, and a public client of it tells users to cut parallel
    image requests to 1 when that repeats: after the first 429 (on any attempt, so before the retries of the
    images it refused go out again together), each attempt waits until no other attempt of the call is on the
    wire. Attempts already on the wire finish as they are; every image keeps its own retries.
    """

    def __init__(self) -> None:
        self.serial = False
        self._active = 0
        # Set when the last active attempt ends; a fresh one whenever attempts start again.
        self._idle = anyio.Event()

    @asynccontextmanager
    async def attempt(self) -> AsyncIterator[None]:
        while self.serial and self._active:
            await self._idle.wait()
        if not self._active:
            self._idle = anyio.Event()
        self._active += 1
        try:
            yield
        finally:
            self._active -= 1
            if not self._active:
                self._idle.set()

    def rate_limited(self) -> None:
        if not self.serial:
            logger.warning("an image request was answered 429: this call's other images go one at a time")
        self.serial = True


class ImageJob(Generic[Request]):
    """One `generate_image` call's images, filled in as each upstream request finishes."""

    def __init__(self, total: int, request: Request) -> None:
        # 128 random bits: the handle is all it takes to read the job's image URIs.
        self.id = secrets.token_hex(16)
        self.total = total
        self.request = request
        self.saved: list[tuple[SavedImage, bytes]] = []
        self.failures: list[str] = []
        self.finished = anyio.Event()
        self.detached = False
        self.cancelled = False
        self._started = time.monotonic()
        self._ended: float | None = None
        self._scope: anyio.CancelScope | None = None
        self.pacer = BatchPacer()

    @property
    def uri(self) -> str:
        return JOB_PREFIX + self.id

    @property
    def seconds(self) -> float:
        """Time since the job started, or its duration once finished."""
        end = self._ended if self._ended is not None else time.monotonic()
        return round(end - self._started, 2)

    @property
    def done_count(self) -> int:
        return len(self.saved) + len(self.failures)

    def detach(self) -> None:
        """The call has returned: from now on the images live on disk only, not in memory."""
        self.detached = True
        self.saved = [(image, b"") for image, _ in self.saved]

    def add(self, image: SavedImage, data: bytes) -> None:
        self.saved.append((image, b"" if self.detached else data))

    def cancel(self) -> None:
        self.cancelled = True
        if self._scope is not None:
            self._scope.cancel()

    def status(self) -> JobStatus:
        if not self.finished.is_set():
            state: Literal["running", "done", "failed", "cancelled"] = "running"
        elif self.cancelled:
            state = "cancelled"
        else:
            state = "done" if self.saved else "failed"
        return JobStatus(
            id=self.id,
            uri=self.uri,
            status=state,
            total=self.total,
            images=[JobImage(uri=i.uri, path=str(i.path), mime_type=i.mime, bytes=i.size_bytes) for i, _ in self.saved],
            failures=list(self.failures),
            seconds=self.seconds,
        )

    async def run(self, produce: Producer[Request]) -> None:
        try:
            with anyio.CancelScope() as scope:
                self._scope = scope
                async with anyio.create_task_group() as group:
                    for index in range(self.total):
                        group.start_soon(self._produce_one, produce, index)
        finally:
            self._ended = time.monotonic()
            self.finished.set()

    async def _produce_one(self, produce: Producer[Request], index: int) -> None:
        # The job runs in the server's own task group: an exception escaping it would end the server.
        try:
            await produce(self, index)
        except Exception:
            logger.exception("image job %s: an image failed unexpectedly", self.id)
            self.failures.append(UNEXPECTED)


class JobBoard:
    """The jobs of this server run; the newest few are kept so that their handles stay readable."""

    def __init__(self, group: anyio.abc.TaskGroup) -> None:
        self._group = group
        self._jobs: OrderedDict[str, ImageJob[Any]] = OrderedDict()

    def start(self, total: int, request: Request, produce: Producer[Request]) -> ImageJob[Request]:
        job = ImageJob(total, request)
        self._jobs[job.id] = job
        while len(self._jobs) > KEEP_JOBS:
            self._jobs.popitem(last=False)
        self._group.start_soon(job.run, produce)
        return job

    def get(self, job_id: str) -> ImageJob[Any] | None:
        return self._jobs.get(job_id)
