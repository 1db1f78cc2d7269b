"""Where generated images and job records are kept (`ONLYSQ_MCP_STORAGE_URL`): a folder, or an S3-compatible
bucket that every replica of a team's service shares.

Both kinds store bytes under slash-separated keys that the callers make (`images.ImageStore`,
`image_jobs.JobLedger`); nothing here knows about images. A key's parts are checked here too, so no key can
leave the folder or the bucket prefix.

The bucket is reached through `obstore` (Python bindings of the Apache Arrow project's `object_store`): it
signs requests, retries and pools connections, and its async calls need no thread. The settings it is given,
and the environment variables it reads itself (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN,
AWS_REGION, AWS_WEB_IDENTITY_TOKEN_FILE, ...), are its `S3Config` keys (obstore/_store/_aws.pyi). Other
S3-compatible services need only their endpoint: Yandex Object Storage is `https://storage.yandexcloud.net`
with region `ru-central1`, as public boto3 and aws-sdk-js callers of it set it (`endpoint_url=...`, some with
`s3ForcePathStyle: true`); it, MinIO and moto answer path-style requests, which `object_store` sends unless told
otherwise.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import stat
import time
from abc import ABC, abstractmethod
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import anyio

if TYPE_CHECKING:
    from obstore.store import S3Store

logger = logging.getLogger(__name__)

# One part of a key: no separators, no `..`, nothing hidden but the server's own `.jobs`.
KEY_PART = re.compile(r"(?:\.jobs|[A-Za-z0-9][A-Za-z0-9._-]{0,199})")
# How long a successful write check of the bucket stands for the calls that follow.
CHECK_SECONDS = 30.0
S3_TIMEOUT = "30s"
S3_CONNECT_TIMEOUT = "5s"
# object_store retries a failed request for up to 3 minutes by default: a tool call must not wait that long.
S3_RETRIES = {"max_retries": 3, "retry_timeout": timedelta(seconds=20)}


class StoredObjectTooLarge(OSError):
    """The object under a key is larger than the caller reads; it was not read."""


def check_key(key: str) -> str:
    if not key or not all(KEY_PART.fullmatch(part) for part in key.split("/")):
        raise FileNotFoundError(key)
    return key


class Storage(ABC):
    """Bytes by key. `get` raises FileNotFoundError for a missing object or a key this storage never makes."""

    @abstractmethod
    def location(self, key: str) -> str:
        """Where the object is, for people: a file path or an `s3://` URL (never a credential)."""

    @abstractmethod
    async def put(self, key: str, data: bytes, content_type: str) -> None:
        """Store `data` whole under `key`: a reader sees the old object or the new one, never a part."""

    @abstractmethod
    async def get(self, key: str, max_bytes: int) -> bytes:
        """The object's bytes; StoredObjectTooLarge, before reading it, when it is over `max_bytes`."""

    @abstractmethod
    async def check(self) -> None:
        """Raise OSError, saying what to change, when nothing can be stored now."""

    async def link(self, key: str) -> str | None:
        """An HTTPS URL that fetches the object without credentials, where the storage can make one."""
        return None


class FolderStorage(Storage):
    """A folder on this machine (the default: ONLYSQ_MCP_OUTPUT_DIR). File work runs in worker threads."""

    def __init__(self, folder: Path) -> None:
        # Absolute, because file resources need an absolute path, and `~` as users write it in config.
        self.folder = folder.expanduser().resolve()

    def __str__(self) -> str:
        return str(self.folder)

    def location(self, key: str) -> str:
        return str(self.folder / check_key(key))

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        await anyio.to_thread.run_sync(self._write, self.folder / check_key(key), data)

    async def get(self, key: str, max_bytes: int) -> bytes:
        return await anyio.to_thread.run_sync(self._read, check_key(key), max_bytes)

    async def check(self) -> None:
        await anyio.to_thread.run_sync(self._probe, abandon_on_cancel=True)

    def _write(self, path: Path, data: bytes) -> None:
        # A reader never sees a half-written file: it appears under its name only when complete.
        partial = path.parent / f".{path.name}.{secrets.token_hex(4)}.part"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(partial, "xb") as handle:
                handle.write(data)
            os.replace(partial, path)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            raise self._unwritable(exc) from None

    def _read(self, key: str, max_bytes: int) -> bytes:
        path = self.folder / key
        # No symlinks anywhere on the way: a link in the folder must not serve a file from elsewhere (O_NOFOLLOW
        # closes the race for the last part where the platform has it). O_NONBLOCK: a FIFO must not hang.
        if path.resolve() != path:
            raise FileNotFoundError(key)
        try:
            fd = os.open(path, os.O_RDONLY | _flag("O_NOFOLLOW") | _flag("O_NONBLOCK") | _flag("O_BINARY"))
        except OSError:
            raise FileNotFoundError(key) from None
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise FileNotFoundError(key)
            if info.st_size > max_bytes:
                raise StoredObjectTooLarge(info.st_size)
            # Capped even after the size check: the file may grow between the two.
            data = handle.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise StoredObjectTooLarge(len(data))
        return data

    def _probe(self) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            probe = self.folder / f".write-test-{secrets.token_hex(4)}"
            probe.touch()
            probe.unlink()
        except OSError as exc:
            raise self._unwritable(exc) from None

    def _unwritable(self, exc: OSError) -> OSError:
        return OSError(
            f"cannot write to the output folder {self.folder} ({exc.strerror}); set ONLYSQ_MCP_OUTPUT_DIR "
            "(or ONLYSQ_MCP_STORAGE_URL) to a folder this server can write to"
        )


def _flag(name: str) -> int:
    # Each platform has only some of these open flags.
    return int(getattr(os, name, 0))


class BucketStorage(Storage):
    """An S3-compatible bucket under a prefix; `link` presigns a GET when `presign_seconds` is over 0."""

    def __init__(self, url: str, *, endpoint: str | None, presign_seconds: int) -> None:
        # Imported only with a bucket: a server on a folder never loads it.
        import obstore

        self._obstore = obstore
        # What obstore raises: its own errors, and built-in ones for a missing object (FileNotFoundError) and bad
        # arguments (ValueError), per obstore/exceptions/__init__.pyi. Anything else is a fault of this server.
        self._errors: tuple[type[Exception], ...] = (obstore.exceptions.BaseError, OSError, ValueError)
        self.url = url.rstrip("/")
        self._store = s3_store(url, endpoint)
        self._presign = timedelta(seconds=presign_seconds) if presign_seconds else None
        self._checked_at = -float("inf")

    def __str__(self) -> str:
        return self.url

    def location(self, key: str) -> str:
        return f"{self.url}/{check_key(key)}"

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        try:
            await self._obstore.put_async(self._store, check_key(key), data, attributes={"Content-Type": content_type})
        except self._errors as exc:
            raise self._failed("store", key, exc) from None

    async def get(self, key: str, max_bytes: int) -> bytes:
        try:
            found = await self._obstore.get_async(self._store, check_key(key))
            size = found.meta["size"]
            # Refused before the body is read.
            data = bytes(await found.bytes_async()) if size <= max_bytes else b""
        except FileNotFoundError:
            raise FileNotFoundError(key) from None
        except self._errors as exc:
            raise self._failed("read", key, exc) from None
        if size > max_bytes or len(data) > max_bytes:
            raise StoredObjectTooLarge(max(size, len(data)))
        return data

    async def check(self) -> None:
        # A write, as saving an image needs: a HEAD cannot tell a missing bucket from a missing object, and a
        # listing needs a permission the server otherwise does without. A success is good for a while, so a
        # burst of calls costs one request.
        if time.monotonic() - self._checked_at < CHECK_SECONDS:
            return
        try:
            await self._obstore.put_async(self._store, ".jobs/write-check", b"")
        except self._errors as exc:
            raise self._failed("reach", "", exc) from None
        self._checked_at = time.monotonic()

    async def link(self, key: str) -> str | None:
        if self._presign is None:
            return None
        try:
            return str(await self._obstore.sign_async(self._store, "GET", check_key(key), self._presign))
        except self._errors as exc:
            logger.warning("cannot presign a link to %s: %s", self.location(key), type(exc).__name__)
            return None

    def _failed(self, action: str, key: str, exc: Exception) -> OSError:
        # object_store's message carries the whole HTTP exchange; the log gets it, the caller a summary.
        logger.warning("cannot %s %s: %s", action, self.location(key) if key else self.url, exc)
        return OSError(
            f"cannot {action} {self.location(key) if key else self.url} ({type(exc).__name__}); check "
            "ONLYSQ_MCP_STORAGE_URL, ONLYSQ_MCP_S3_ENDPOINT_URL and the AWS_* credentials, or try again"
        )


def s3_store(url: str, endpoint: str | None) -> S3Store:
    from obstore.store import S3Store

    parts = urlsplit(url)
    config: dict[str, str] = {}
    if endpoint:
        config["endpoint"] = endpoint
    # object_store reads AWS_REGION itself; an unset region means us-east-1, as for the AWS SDKs.
    if not os.environ.get("AWS_REGION") and not os.environ.get("AWS_DEFAULT_REGION"):
        config["region"] = "us-east-1"
    return S3Store(
        parts.netloc,
        prefix=parts.path.strip("/") or None,
        config=config,  # type: ignore[arg-type]
        client_options={
            "allow_http": bool(endpoint and endpoint.startswith("http://")),
            "timeout": S3_TIMEOUT,
            "connect_timeout": S3_CONNECT_TIMEOUT,
        },
        retry_config=S3_RETRIES,  # type: ignore[arg-type]
    )
