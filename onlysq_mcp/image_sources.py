"""Reading the image a caller points `describe_image` at: a file, a URL, a data URI, base64, or a generated image.

Every check happens here, before any upstream call, and every failure is an `ImageInputError` whose
message says what was wrong and what to pass instead.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urljoin, urlparse

import anyio
import httpx2

from .images import RESOURCE_PREFIX, ImageStore, sniff_mime

WINDOWS_PATH = re.compile(r"^[A-Za-z]:[\\/]")
BASE64_TEXT = re.compile(r"^[A-Za-z0-9+/=\s_-]+$")
ACCEPTED = "PNG, JPEG, WebP or GIF"
FETCH_SECONDS = 30.0
MAX_REDIRECTS = 5


class ImageInputError(Exception):
    """The image argument cannot be used; the message says why and what to do."""


@dataclass(frozen=True)
class InputPolicy:
    """What a caller may point the server at; stricter over HTTP, where the caller is not the user."""

    max_bytes: int
    local_files: bool = True
    file_roots: list[Path] = field(default_factory=list)
    allow_private_urls: bool = False


@dataclass(frozen=True)
class LoadedImage:
    data: bytes
    mime: str
    source: str


async def load_image(spec: str, *, store: ImageStore, http: httpx2.AsyncClient, policy: InputPolicy) -> LoadedImage:
    max_bytes = policy.max_bytes
    spec = spec.strip()
    if not spec:
        raise ImageInputError("`image` is empty: pass a file path, an http(s) URL, a data: URI or base64 image data.")
    if spec.startswith(RESOURCE_PREFIX):
        name = spec.removeprefix(RESOURCE_PREFIX)
        try:
            data, _ = store.open(name)
        except FileNotFoundError:
            raise ImageInputError(
                f"no generated image `{spec}` exists in the output folder; use a URI that `generate_image` returned."
            ) from None
        return checked(data, f"generated image {spec}", max_bytes)
    if spec.startswith("data:"):
        return checked(decode_data_uri(spec), "data URI", max_bytes)
    if WINDOWS_PATH.match(spec):
        return read_file(Path(spec), policy)
    try:
        parsed = urlparse(spec)
    except ValueError:
        raise ImageInputError(f"`{spec}` is not a valid URL.") from None
    scheme = parsed.scheme.lower()
    if scheme in ("http", "https"):
        return await fetch(spec, http, policy)
    if scheme == "file":
        # file:///C:/x.png carries a Windows drive after the leading slash.
        raw = unquote(parsed.path)
        return read_file(Path(raw[1:] if WINDOWS_PATH.match(raw[1:]) else raw), policy)
    path = Path(spec).expanduser()
    # Base64 of a JPEG starts with `/9j/` and looks like a path; only an existing file wins over it.
    if len(spec) > 100 and BASE64_TEXT.match(spec) and not is_file(path):
        return checked(decode_base64_text(spec), "base64 data", max_bytes)
    if scheme and len(scheme) > 1 and "://" in spec:
        raise ImageInputError(f"`{scheme}://` is not supported: pass a file path, an http(s) URL, or a data: URI.")
    return read_file(path, policy)


def is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # e.g. a name too long for the file system
        return False


def checked(data: bytes, source: str, max_bytes: int) -> LoadedImage:
    if not data:
        raise ImageInputError(f"the {source} is empty (0 bytes).")
    if len(data) > max_bytes:
        raise ImageInputError(
            f"the {source} is {len(data):,} bytes, over the {max_bytes:,}-byte limit (ONLYSQ_MCP_MAX_INPUT_BYTES); "
            "pass a smaller image."
        )
    mime = sniff_mime(data)
    if mime is None:
        raise ImageInputError(f"the {source} is not a {ACCEPTED} image (its first bytes are {data[:8]!r}).")
    return LoadedImage(data=data, mime=mime, source=source)


def allowed_path(path: Path, policy: InputPolicy) -> Path:
    """The resolved path, if the policy lets a caller read it; checked before the file is even looked at."""
    if not policy.local_files and not policy.file_roots:
        raise ImageInputError(
            "this server does not read local files for remote callers (set ONLYSQ_MCP_FILE_ROOTS to allow "
            "some folders); pass the image as an http(s) URL, a data: URI or base64 instead."
        )
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError):
        raise ImageInputError(f"`{path}` cannot be resolved to a file path.") from None
    if policy.file_roots and not any(resolved.is_relative_to(root) for root in policy.file_roots):
        folders = ", ".join(str(root) for root in policy.file_roots)
        raise ImageInputError(
            f"`{path}` is outside the folders this server may read ({folders}; ONLYSQ_MCP_FILE_ROOTS)."
        )
    return resolved


def read_file(path: Path, policy: InputPolicy) -> LoadedImage:
    """Messages name the path as the caller wrote it; the resolved path is what gets checked and read."""
    max_bytes = policy.max_bytes
    resolved = allowed_path(path, policy)
    try:
        if not resolved.exists():
            raise ImageInputError(f"no file at `{path}`; check the path (absolute paths are safest).")
        if not resolved.is_file():
            raise ImageInputError(f"`{path}` is not a file.")
        size = resolved.stat().st_size
        if size > max_bytes:
            raise ImageInputError(
                f"`{path}` is {size:,} bytes, over the {max_bytes:,}-byte limit (ONLYSQ_MCP_MAX_INPUT_BYTES)."
            )
        # The size above can be wrong: files in /proc report 0 and some (pagemap) read on for gigabytes.
        with resolved.open("rb") as handle:
            data = handle.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise ImageInputError(
                f"`{path}` is over the {max_bytes:,}-byte limit (ONLYSQ_MCP_MAX_INPUT_BYTES), although it "
                f"reports {size:,} bytes."
            )
    except PermissionError:
        raise ImageInputError(f"`{path}` cannot be read: permission denied.") from None
    except OSError as exc:
        raise ImageInputError(f"`{path}` cannot be read ({exc.strerror}).") from None
    return checked(data, f"file `{path}`", max_bytes)


def decode_data_uri(uri: str) -> bytes:
    header, sep, payload = uri.partition(",")
    if not sep:
        raise ImageInputError("the data: URI has no comma; expected data:image/png;base64,<data>.")
    if not header.endswith(";base64"):
        raise ImageInputError("only base64 data: URIs are supported (data:image/png;base64,<data>).")
    return decode_base64_text(payload)


def decode_base64_text(text: str) -> bytes:
    cleaned = "".join(text.split())
    try:
        if "-" in cleaned or "_" in cleaned:
            return base64.urlsafe_b64decode(cleaned + "=" * (-len(cleaned) % 4))
        return base64.b64decode(cleaned + "=" * (-len(cleaned) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ImageInputError("the image data is not valid base64.") from None


async def fetch(url: str, http: httpx2.AsyncClient, policy: InputPolicy) -> LoadedImage:
    max_bytes = policy.max_bytes
    try:
        # One deadline for the whole download: a server that trickles bytes never trips a read timeout.
        with anyio.fail_after(FETCH_SECONDS):
            body = await download(url, http, policy)
    except (TimeoutError, httpx2.TimeoutException):
        raise ImageInputError(f"fetching {url} timed out; download it and pass the file instead.") from None
    except (httpx2.HTTPError, httpx2.InvalidURL) as exc:
        raise ImageInputError(f"fetching {url} failed ({type(exc).__name__}).") from None
    return checked(body, f"image at {url}", max_bytes)


async def download(url: str, http: httpx2.AsyncClient, policy: InputPolicy) -> bytes:
    """GET with redirects followed by hand, so that every hop's address is checked before it is contacted."""
    max_bytes = policy.max_bytes
    for _ in range(MAX_REDIRECTS + 1):
        await check_public(url, policy)
        async with http.stream("GET", url, follow_redirects=False) as response:
            if response.is_redirect and "location" in response.headers:
                url = urljoin(url, response.headers["location"])
                continue
            if response.status_code != 200:
                raise ImageInputError(f"fetching {url} failed: HTTP {response.status_code}.")
            declared = response.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise ImageInputError(
                    f"{url} is {int(declared):,} bytes, over the {max_bytes:,}-byte limit (ONLYSQ_MCP_MAX_INPUT_BYTES)."
                )
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > max_bytes:
                    raise ImageInputError(
                        f"{url} is over the {max_bytes:,}-byte limit (ONLYSQ_MCP_MAX_INPUT_BYTES); pass a smaller image."
                    )
            return bytes(body)
    raise ImageInputError(f"fetching the image took more than {MAX_REDIRECTS} redirects; pass the final URL.")


async def check_public(url: str, policy: InputPolicy) -> None:
    """Refuse URLs that lead to this machine or its private network (SSRF), unless the operator allows it.

    The name is resolved here and again by the HTTP client; a DNS answer that changes in between could
    slip past, which is why private addresses stay refused by default rather than relying on this alone.
    """
    parsed = urlparse(url)
    if parsed.scheme.lower() not in ("http", "https"):
        raise ImageInputError(f"only http and https URLs can be fetched, not `{parsed.scheme}`.")
    host = parsed.hostname
    if not host:
        raise ImageInputError(f"`{url}` has no host name.")
    if policy.allow_private_urls:
        return
    try:
        infos = await anyio.getaddrinfo(host, parsed.port or 443, type=socket.SOCK_STREAM)
    except OSError:
        raise ImageInputError(f"the host `{host}` could not be resolved.") from None
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if not address.is_global or address.is_multicast:
            raise ImageInputError(
                f"`{host}` resolves to {address}, a private, loopback or otherwise non-public address; such URLs "
                "are refused (the operator can allow them with ONLYSQ_MCP_ALLOW_PRIVATE_URLS)."
            )
