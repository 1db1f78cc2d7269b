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
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

import anyio
import httpx2

from .images import RESOURCE_PREFIX, ImageStore, sniff_mime
from .redaction import display_url

WINDOWS_PATH = re.compile(r"^[A-Za-z]:[\\/]")
BASE64_TEXT = re.compile(r"^[A-Za-z0-9+/=\s_-]+$")
ACCEPTED = "PNG, JPEG, WebP or GIF"
FETCH_SECONDS = 30.0
MAX_REDIRECTS = 5
MAX_PORT = 65535
DEFAULT_PORTS = {"http": 80, "https": 443}
# RFC 1035 2.3.4 limits, and the characters of a DNS label (with `_`, which real names do use).
MAX_HOST_NAME = 253
MAX_LABEL = 63
HOST_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_")
# RFC 6052 well-known NAT64 prefix: the IPv4 address is the last 32 bits.
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
# RFC 8215 local-use NAT64 prefix: not globally reachable (IANA special-purpose registry), and where the
# IPv4 address sits depends on each network's prefix length; Python 3.11's `is_global` calls it global.
LOCAL_NAT64 = ipaddress.IPv6Network("64:ff9b:1::/48")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class ImageInputError(Exception):
    """The image argument cannot be used; the message says why and what to do."""


@dataclass(frozen=True)
class InputPolicy:
    """What a caller may point the server at; stricter over HTTP, where the caller is not the user."""

    max_bytes: int
    local_files: bool = True
    file_roots: list[Path] = field(default_factory=list)
    allow_private_urls: bool = False
    # ONLYSQ_MCP_PROXY, which a failed download then names.
    proxy: str | None = None


@dataclass(frozen=True)
class LoadedImage:
    data: bytes
    mime: str
    source: str


async def load_image(
    spec: str, *, store: ImageStore, owner: str, http: httpx2.AsyncClient, policy: InputPolicy
) -> LoadedImage:
    """The caller's image from any form `describe_image` takes; a generated one must be `owner`'s."""
    max_bytes = policy.max_bytes
    spec = spec.strip()
    if not spec:
        raise ImageInputError("`image` is empty: pass a file path, an http(s) URL, a data: URI or base64 image data.")
    if spec.startswith(RESOURCE_PREFIX):
        name = spec.removeprefix(RESOURCE_PREFIX)
        try:
            data, _ = await store.open(name, owner)
        except FileNotFoundError:
            raise ImageInputError(
                f"no generated image `{spec}` exists in this server's storage; use a URI that `generate_image` "
                "returned."
            ) from None
        except OSError as exc:
            raise ImageInputError(str(exc)) from None
        return checked(data, f"generated image {spec}", max_bytes)
    if spec.startswith("data:"):
        return checked(decode_data_uri(spec), "data URI", max_bytes)
    if WINDOWS_PATH.match(spec):
        return read_file(local_path(spec), policy)
    try:
        parsed = urlparse(spec)
    except ValueError:
        raise ImageInputError(f"`{shown(spec)}` is not a valid URL.") from None
    scheme = parsed.scheme.lower()
    if scheme in ("http", "https"):
        return await fetch(spec, http, policy)
    if scheme == "file":
        # file:///C:/x.png carries a Windows drive after the leading slash.
        raw = unquote(parsed.path)
        return read_file(local_path(raw[1:] if WINDOWS_PATH.match(raw[1:]) else raw), policy)
    path = local_path(spec).expanduser()
    # Base64 of a JPEG starts with `/9j/` and looks like a path; only an existing file wins over it.
    if len(spec) > 100 and BASE64_TEXT.match(spec) and not is_file(path):
        return checked(decode_base64_text(spec), "base64 data", max_bytes)
    if scheme and len(scheme) > 1 and "://" in spec:
        raise ImageInputError(f"`{scheme}://` is not supported: pass a file path, an http(s) URL, or a data: URI.")
    return read_file(path, policy)


def local_path(text: str) -> Path:
    """A path to read; refused here if no file system could hold it, rather than failing deep in `os`."""
    if "\x00" in text:
        raise ImageInputError(
            f"the path `{shown(text)}` contains a NUL byte (\\x00), which no file name can hold; "
            "pass the path without it."
        )
    return Path(text)


def shown(text: str, limit: int = 200) -> str:
    """`text` as it may appear in a message: control characters escaped, and not longer than `limit`."""
    escaped = "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)
    return escaped if len(escaped) <= limit else escaped[: limit - 3] + "..."


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
        raise ImageInputError(f"fetching {shown(url)} timed out; download it and pass the file instead.") from None
    except (httpx2.HTTPError, httpx2.InvalidURL) as exc:
        raise ImageInputError(
            f"fetching {shown(url)} failed{proxy_part(exc, policy)} ({type(exc).__name__})."
        ) from None
    return checked(body, f"image at {shown(url)}", max_bytes)


def proxy_part(exc: Exception, policy: InputPolicy) -> str:
    """What the proxy had to do with a failed download: with one set, it is the only host connected to here."""
    if not policy.proxy:
        return ""
    proxy = f"the proxy {display_url(policy.proxy)} (ONLYSQ_MCP_PROXY)"
    if isinstance(exc, httpx2.ConnectError):
        return f": could not reach {proxy}; check that it is running, or correct the setting"
    if isinstance(exc, httpx2.ProxyError):
        return f": {proxy} could not reach the image's host"
    return ""


async def download(url: str, http: httpx2.AsyncClient, policy: InputPolicy) -> bytes:
    """GET with redirects followed by hand, so that every hop's address is checked before it is contacted."""
    max_bytes = policy.max_bytes
    for _ in range(MAX_REDIRECTS + 1):
        target = parse_url(url)
        addresses = await check_public(target, policy)
        async with pinned_get(http, target, addresses) as response:
            if response.is_redirect and "location" in response.headers:
                url = str(target.join(response.headers["location"]))
                continue
            if response.status_code != 200:
                raise ImageInputError(f"fetching {shown(url)} failed: HTTP {response.status_code}.")
            declared = response.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise ImageInputError(
                    f"{shown(url)} is {int(declared):,} bytes, over the {max_bytes:,}-byte limit "
                    "(ONLYSQ_MCP_MAX_INPUT_BYTES)."
                )
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > max_bytes:
                    raise ImageInputError(
                        f"{shown(url)} is over the {max_bytes:,}-byte limit (ONLYSQ_MCP_MAX_INPUT_BYTES); "
                        "pass a smaller image."
                    )
            return bytes(body)
    raise ImageInputError(f"fetching the image took more than {MAX_REDIRECTS} redirects; pass the final URL.")


def parse_url(url: str) -> httpx2.URL:
    """`url` as the HTTP client reads it, or the reason it cannot be fetched.

    httpx2 is also what connects, so the host checked here is the host contacted.
    """
    try:
        target = httpx2.URL(url)
    except httpx2.InvalidURL as exc:
        # httpx2 raises this while handling the idna package's error, whose text names the character at fault.
        cause = exc.__context__
        detail = f" ({shown(str(cause))})" if isinstance(cause, UnicodeError) else ""
        raise ImageInputError(f"`{shown(url)}` is not a valid URL: {shown(str(exc))}{detail}.") from None
    if target.scheme not in ("http", "https"):
        raise ImageInputError(f"only http and https URLs can be fetched, not `{shown(target.scheme)}`.")
    if not target.raw_host:
        raise ImageInputError(f"`{shown(url)}` has no host name.")
    if target.port is not None and not 1 <= target.port <= MAX_PORT:
        raise ImageInputError(f"`{shown(url)}` has port {target.port}; a port is a number from 1 to {MAX_PORT}.")
    problem = host_name_problem(target.raw_host.decode("ascii"))
    if problem:
        raise ImageInputError(f"`{shown(url)}` has an invalid host name: {problem}; check the URL.")
    return target


def host_name_problem(host: str) -> str | None:
    """What makes `host` (as httpx2 encodes it: IDNA, percent-escapes) no DNS name, if anything (RFC 1035 2.3.4)."""
    if ip_literal(host) is not None:
        return None
    name = unquote(host).removesuffix(".")
    if len(name) > MAX_HOST_NAME:
        return f"it is {len(name)} characters long, over the {MAX_HOST_NAME} allowed"
    for label in name.split("."):
        if not label:
            return "it has an empty label (two dots in a row, or a leading dot)"
        if len(label) > MAX_LABEL:
            return f"the label `{shown(label, 40)}` is {len(label)} characters long, over the {MAX_LABEL} allowed"
        wrong = next((char for char in label if char not in HOST_CHARACTERS), None)
        if wrong is not None:
            return f"{shown(repr(wrong))} cannot appear in a host name"
        if label.startswith("xn--"):
            try:
                label.encode("ascii").decode("idna")
            except UnicodeError as exc:
                return f"`{label}` is not a valid international (IDNA) label: {shown(str(exc))}"
    return None


def ip_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


async def check_public(url: httpx2.URL, policy: InputPolicy) -> list[IPAddress]:
    """The addresses of `url`'s host, refused if any leads to this machine or its private network (SSRF).

    The download connects to these very addresses (`pinned_get`): a DNS answer that changes after this
    check (rebinding) is never used. The operator may allow private addresses; they are pinned all the same.
    """
    host = url.raw_host.decode("ascii")
    addresses = await resolve(host, url.port or DEFAULT_PORTS[url.scheme])
    if policy.allow_private_urls:
        return addresses
    for address in addresses:
        if not is_public(address):
            where = f"the address {address}" if ip_literal(host) is not None else f"`{host}` resolves to {address}"
            if isinstance(address, ipaddress.IPv6Address) and embedded_ipv4(address):
                where += " (which carries " + ", ".join(str(v4) for v4 in embedded_ipv4(address)) + ")"
            raise ImageInputError(
                f"{where}, a private, loopback or otherwise non-public address; such URLs are refused "
                "(the operator can allow them with ONLYSQ_MCP_ALLOW_PRIVATE_URLS)."
            )
    return addresses


async def resolve(host: str, port: int) -> list[IPAddress]:
    literal = ip_literal(host)
    if literal is not None:
        return [literal]
    try:
        # Bytes: the name is already IDNA-encoded by httpx2, and must not be re-encoded differently.
        infos = await anyio.getaddrinfo(host.encode("ascii"), port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        infos = []
    addresses = list(dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos))
    if not addresses:
        raise ImageInputError(f"the host `{host}` could not be resolved.")
    return addresses


def is_public(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            # The socket talks IPv4 to the mapped address: that address is the destination.
            return is_public(address.ipv4_mapped)
        if address in LOCAL_NAT64 or not all(is_public(v4) for v4 in embedded_ipv4(address)):
            return False
    return address.is_global and not address.is_multicast


def embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address leads to through a translator or tunnel; Python's `is_global` ignores them."""
    found: list[ipaddress.IPv4Address] = []
    if address.ipv4_mapped is not None:
        found.append(address.ipv4_mapped)
    if address.sixtofour is not None:
        found.append(address.sixtofour)
    if address.teredo is not None:
        found.extend(address.teredo)  # (server, client), the client already de-obfuscated
    # NAT64 (RFC 6052 section 2.2: the last 32 bits after the /96 prefix) and IPv4-compatible ::a.b.c.d (RFC 4291).
    if address in NAT64 or int(address) >> 32 == 0:
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return found


@asynccontextmanager
async def pinned_get(
    http: httpx2.AsyncClient, url: httpx2.URL, addresses: list[IPAddress]
) -> AsyncIterator[httpx2.Response]:
    """GET `url` from the first of the checked `addresses` that takes a connection; no new DNS lookup.

    The URL's host becomes the address; the Host header and the TLS server name (SNI, and the name the
    certificate must carry) stay the name: `sni_hostname` is httpcore2's request extension for that
    (httpcore2/_async/connection.py, `_connect`).
    """
    headers = {"Host": url.netloc.decode("ascii")}
    extensions = {"sni_hostname": url.raw_host.decode("ascii")}
    failure = httpx2.ConnectError(f"no address to connect to for {url.raw_host.decode('ascii')}")
    for address in addresses:
        request = http.build_request("GET", url.copy_with(host=str(address)), headers=headers, extensions=extensions)
        try:
            response = await http.send(request, stream=True, follow_redirects=False)
        except httpx2.ConnectError as exc:
            failure = exc  # e.g. an IPv6 answer on a host without IPv6: try the next one
            continue
        try:
            yield response
        finally:
            await response.aclose()
        return
    raise failure
