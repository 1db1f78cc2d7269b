"""Image generations that may outlive the tool call that started them.

A generation runs in the server's own task group, not in the request. When it takes longer than
`ONLYSQ_MCP_IMAGE_WAIT`, `generate_image` returns a job handle instead of letting the host's request time
out; the images still land in storage, and the job's resource lists them once they are ready. A later
`generate_image` call with the handle waits again and answers as the first call would have: the job keeps
what that answer needs (`JobRequest`).

Every job keeps a record in storage (`JobLedger`), rewritten as images arrive and, while it runs, at least
every third of `ONLYSQ_MCP_JOB_LEASE`: with shared storage another replica answers for it, and a record
that stopped being rewritten belongs to a replica that stopped, so the job is reported failed, not running
for ever.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, Literal, Protocol

import anyio
import anyio.abc
from pydantic import BaseModel, Field, ValidationError

from .images import SavedImage
from .storage import Storage

logger = logging.getLogger(__name__)

JOB_PREFIX = "onlysq://jobs/"
UNEXPECTED = "an unexpected error on this server (the traceback is in its log); try again"
# Makes the image of the given index (0 to total - 1) for the job.
Producer = Callable[["ImageJob", int], Coroutine[Any, Any, None]]
KEEP_JOBS = 200
JOB_ID = re.compile(r"[0-9a-f]{32}")
MAX_RECORD_BYTES = 1_000_000
# How often a call collecting another replica's job reads its record again.
REMOTE_POLL_SECONDS = 0.5
# A record is written within this after the job ends, even while the server stops.
FINAL_WRITE_SECONDS = 5.0
JobState = Literal["running", "done", "failed", "cancelled"]


class JobImage(BaseModel):
    uri: str
    path: str
    mime_type: str
    bytes: int


class JobStatus(BaseModel):
    id: str
    uri: str = Field(description="Read this resource for the job's status and, once done, its images.")
    status: JobState
    total: int = Field(description="Images asked for.")
    images: list[JobImage] = Field(description="Images saved so far (each also an onlysq://images/... resource).")
    failures: list[str]
    seconds: float = Field(description="Time since the job started, or its duration once finished.")


class JobRequest(BaseModel):
    """What the answer for a job repeats of the request that started it."""

    provider: str
    model: str
    prompt: str
    aspect_ratio: str
    notes: list[str]


class JobRecord(JobStatus):
    """A job as storage keeps it: its status, what its answer needs, and when its replica last wrote it."""

    request: JobRequest
    paced: bool = False
    started_at: float
    alive_at: float

    def public(self) -> JobStatus:
        """What a caller sees: the status without the bookkeeping."""
        return JobStatus.model_validate(self.model_dump(include=set(JobStatus.model_fields)))


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


class TrackedJob(Protocol):
    """A job as a call waiting for it sees it: run here (`ImageJob`) or by another replica (`RemoteJob`)."""

    id: str
    total: int

    @property
    def seconds(self) -> float: ...

    @property
    def done_count(self) -> int: ...

    @property
    def ready_count(self) -> int: ...

    async def wait_until(self, deadline: float) -> None: ...

    def record(self) -> JobRecord: ...


class ImageJob:
    """One `generate_image` call's images, run by this server, filled in as each upstream request finishes."""

    def __init__(self, total: int, request: JobRequest, owner: str) -> None:
        # 128 random bits: the handle is all it takes (with the owner's identity) to read the job's image URIs.
        self.id = secrets.token_hex(16)
        self.total = total
        self.request = request
        self.owner = owner
        self.saved: list[tuple[SavedImage, bytes]] = []
        self.failures: list[str] = []
        self.finished = anyio.Event()
        self.detached = False
        self.cancelled = False
        self._started = time.monotonic()
        self._started_at = time.time()
        self._ended: float | None = None
        self._scope: anyio.CancelScope | None = None
        self._changed = anyio.Event()
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

    @property
    def ready_count(self) -> int:
        return len(self.saved)

    def detach(self) -> None:
        """The call has returned: from now on the images live in storage only, not in memory, and the job's
        record is kept there (only a detached job's handle is ever given out)."""
        self.detached = True
        self.saved = [(image, b"") for image, _ in self.saved]
        self._changed.set()

    def add(self, image: SavedImage, data: bytes) -> None:
        self.saved.append((image, b"" if self.detached else data))
        self._changed.set()

    def fail(self, reason: str) -> None:
        self.failures.append(reason)
        self._changed.set()

    def cancel(self) -> None:
        self.cancelled = True
        if self._scope is not None:
            self._scope.cancel()

    async def wait_until(self, deadline: float) -> None:
        with anyio.move_on_at(deadline):
            await self.finished.wait()

    def state(self) -> JobState:
        if not self.finished.is_set():
            return "running"
        if self.cancelled:
            return "cancelled"
        return "done" if self.saved else "failed"

    def record(self) -> JobRecord:
        return JobRecord(
            id=self.id,
            uri=self.uri,
            status=self.state(),
            total=self.total,
            images=[JobImage(uri=i.uri, path=i.location, mime_type=i.mime, bytes=i.size_bytes) for i, _ in self.saved],
            failures=list(self.failures),
            seconds=self.seconds,
            request=self.request,
            paced=self.pacer.serial,
            started_at=self._started_at,
            alive_at=time.time(),
        )

    async def run(self, produce: Producer, ledger: JobLedger) -> None:
        try:
            with anyio.CancelScope() as scope:
                self._scope = scope
                async with anyio.create_task_group() as group:
                    group.start_soon(self._keep_recorded, ledger)
                    async with anyio.create_task_group() as images:
                        for index in range(self.total):
                            images.start_soon(self._produce_one, produce, index)
                    group.cancel_scope.cancel()
        finally:
            self._ended = time.monotonic()
            missing = self.total - self.done_count
            if missing and not self.cancelled:
                # The server is stopping (a restart, a rollout): the record must not read as a quiet failure.
                self.failures.append(f"the server stopped before {missing} image(s) were made")
            self.finished.set()
            if self.detached:
                # The last word on the job, even while the server stops; bounded, as storage may be what failed.
                with anyio.CancelScope(shield=True), anyio.move_on_after(FINAL_WRITE_SECONDS):
                    await ledger.save(self)

    async def _keep_recorded(self, ledger: JobLedger) -> None:
        """Once detached, rewrites the record when an image arrives, and often enough that other replicas see
        the job alive."""
        while True:
            if self.detached:
                await ledger.save(self)
            with anyio.move_on_after(ledger.heartbeat_seconds):
                await self._changed.wait()
            self._changed = anyio.Event()

    async def _produce_one(self, produce: Producer, index: int) -> None:
        # The job runs in the server's own task group: an exception escaping it would end the server.
        try:
            await produce(self, index)
        except Exception:
            logger.exception("image job %s: an image failed unexpectedly", self.id)
            self.fail(UNEXPECTED)


class RemoteJob:
    """A job another replica runs (or ran), followed through its record in storage."""

    def __init__(self, record: JobRecord, ledger: JobLedger, owner: str) -> None:
        self.id = record.id
        self.total = record.total
        self._record = record
        self._ledger = ledger
        self._owner = owner

    @property
    def seconds(self) -> float:
        return self._record.seconds

    @property
    def done_count(self) -> int:
        return len(self._record.images) + len(self._record.failures)

    @property
    def ready_count(self) -> int:
        return len(self._record.images)

    async def wait_until(self, deadline: float) -> None:
        with anyio.move_on_at(deadline):
            while self._record.status == "running":
                await anyio.sleep(REMOTE_POLL_SECONDS)
                self._record = await self._ledger.load(self._owner, self.id) or self._record

    def record(self) -> JobRecord:
        return self._record


class JobLedger:
    """Job records in storage, one object per job under the owner's prefix."""

    def __init__(self, storage: Storage, lease_seconds: float) -> None:
        self._storage = storage
        self.lease_seconds = lease_seconds
        self.heartbeat_seconds = lease_seconds / 3
        self._locks: dict[str, anyio.Lock] = {}

    @staticmethod
    def key(owner: str, job_id: str) -> str:
        return f".jobs/{owner}{job_id}.json"

    async def save(self, job: ImageJob) -> None:
        """Writes the job's record as it is now. A failure is logged, never raised: the images matter more."""
        # One write at a time per job, each taking the state when it starts: a slow older write cannot land
        # after a newer one.
        lock = self._locks.setdefault(job.id, anyio.Lock())
        try:
            async with lock:
                data = job.record().model_dump_json().encode()
                await self._storage.put(self.key(job.owner, job.id), data, "application/json")
        except OSError as exc:
            logger.warning("image job %s: its record was not written (%s)", job.id, exc)
        finally:
            if job.finished.is_set() and not lock.statistics().tasks_waiting:
                self._locks.pop(job.id, None)

    async def load(self, owner: str, job_id: str) -> JobRecord | None:
        """The owner's job as storage has it; None if there is none, or it cannot be read now."""
        try:
            data = await self._storage.get(self.key(owner, job_id), MAX_RECORD_BYTES)
            record = JobRecord.model_validate_json(data)
        except FileNotFoundError:
            return None
        except (OSError, ValidationError) as exc:
            logger.warning("image job %s: its record cannot be read (%s)", job_id, exc)
            return None
        silent = time.time() - record.alive_at
        if record.status == "running" and silent > self.lease_seconds:
            record.status = "done" if record.images else "failed"
            record.seconds = round(record.alive_at - record.started_at, 2)
            record.failures.append(
                f"the server running this job stopped before it finished (no word from it for {silent:.0f}s); "
                f"{record.total - len(record.images) - len(record.failures)} image(s) were not made"
            )
        return record


class JobBoard:
    """The jobs this server runs (the newest few kept in memory), and the ledger for everyone's."""

    def __init__(self, group: anyio.abc.TaskGroup, ledger: JobLedger) -> None:
        self._group = group
        self.ledger = ledger
        self._jobs: OrderedDict[str, ImageJob] = OrderedDict()

    def start(self, total: int, request: JobRequest, owner: str, produce: Producer) -> ImageJob:
        job = ImageJob(total, request, owner)
        self._jobs[job.id] = job
        while len(self._jobs) > KEEP_JOBS:
            self._jobs.popitem(last=False)
        self._group.start_soon(job.run, produce, self.ledger)
        return job

    async def find(self, owner: str, job_id: str) -> TrackedJob | None:
        """The owner's job: this server's own, or one in storage; another owner's job is not found."""
        # Only ids this server makes: anything else (a path, another owner's prefix) names no record.
        if not JOB_ID.fullmatch(job_id):
            return None
        job = self._jobs.get(job_id)
        if job is not None:
            return job if job.owner == owner else None
        record = await self.ledger.load(owner, job_id)
        return None if record is None else RemoteJob(record, self.ledger, owner)
