"""Image bytes: sniff the type, measure, save without collisions, make previews that fit a budget.

Pillow is imported only inside the functions that need it, so the server starts without it.
"""

from __future__ import annotations

import io
import math
import re
import secrets
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

from .storage import Storage, StoredObjectTooLarge

RESOURCE_PREFIX = "onlysq://images/"
EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "image/gif": "gif"}
# The default of ONLYSQ_MCP_MAX_IMAGE_BYTES.
MAX_IMAGE_BYTES = 20_000_000
# Names `save` makes: time, a slug of the prompt, 128 random bits (so a URI cannot be guessed), the type.
SAFE_NAME = re.compile(r"\d{8}-\d{6}-[a-z0-9-]{1,40}-[0-9a-f]{32}\.(?:png|jpg|webp|gif)")


def sniff_mime(data: bytes) -> str | None:
    """The type the bytes really are; upstreams are known to send JPEG where PNG was expected."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    return None


class ImageDecodeError(Exception):
    """Pillow cannot decode the bytes: corrupt, truncated, or more pixels than it will safely open."""


class ImageTooLarge(ImageDecodeError):
    """The header declares more pixels than the server decodes; a decode costs 4-18 bytes a pixel."""

    def __init__(self, size: tuple[int, int], max_pixels: int) -> None:
        width, height = size
        super().__init__(
            f"is {width:,}×{height:,} pixels ({width * height / 1e6:.1f} megapixels), over the "
            f"{max_pixels:,}-pixel limit (ONLYSQ_MCP_MAX_INPUT_PIXELS)"
        )
        self.size = size


def pixel_size(data: bytes) -> tuple[int, int] | None:
    """Width and height as the header declares them, read by hand; None if there is no readable header.

    No decoder runs: Pillow's `Image.open` is not enough, because for WebP it builds libwebp's decoder
    (which allocates the whole canvas) and for a GIF it may fill a frame-sized disposal image.
    """
    reader = HEADER_READERS.get(sniff_mime(data) or "")
    if reader is None:
        return None
    try:
        size = reader(data)
    except (IndexError, struct.error):  # truncated inside a header field
        return None
    return size if size and size[0] > 0 and size[1] > 0 else None


def png_size(data: bytes) -> tuple[int, int] | None:
    # The first chunk must be IHDR: width and height as 4-byte big-endian numbers (PNG spec, 11.2.2).
    if data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack_from(">II", data, 16)
    return width, height


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """The largest frame header (SOFn) before the first scan; libjpeg sizes its buffers from it (ITU T.81, B.2)."""
    at, size = 2, None
    while at + 4 <= len(data):
        if data[at] != 0xFF:  # stray bytes between segments: libjpeg skips to the next marker, so do we
            at = data.find(b"\xff", at)
            if at < 0:
                break
            continue
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            at += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image, start of scan: every frame header is behind us
            break
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack_from(">HH", data, at + 5)
            size = (max(width, size[0]), max(height, size[1])) if size else (width, height)
        at += 2 + struct.unpack_from(">H", data, at + 2)[0]
    return size


def webp_size(data: bytes) -> tuple[int, int] | None:
    """The canvas of an extended file (VP8X), else the size in the one lossless or lossy bitstream.

    Layouts from RFC 9649: VP8X 24-bit width-1 and height-1; VP8L 14-bit fields after the 0x2F signature;
    VP8 a key frame's 14-bit fields after the start code 9D 01 2A. Frames of an animation lie within
    the canvas (libwebp's demuxer refuses others).
    """
    chunk = data[12:16]
    if chunk == b"VP8X" and len(data) >= 30:
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack_from("<HH", data, 26)
        return width & 0x3FFF, height & 0x3FFF
    return None


def gif_size(data: bytes) -> tuple[int, int] | None:
    """The logical screen, grown to hold every frame: decoders (Pillow too) enlarge the canvas for a
    frame that lies outside it. Block layout from the GIF89a specification, sections 17-27."""
    width, height, flags = struct.unpack_from("<HHB", data, 6)
    at = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    while at < len(data):
        block = data[at]
        if block == 0x3B:  # trailer
            break
        if block == 0x2C:  # image descriptor: left, top, width, height, flags
            left, top, frame_w, frame_h, frame_flags = struct.unpack_from("<HHHHB", data, at + 1)
            width, height = max(width, left + frame_w), max(height, top + frame_h)
            at += 10 + (3 << ((frame_flags & 7) + 1) if frame_flags & 0x80 else 0) + 1  # + LZW code size
        elif block == 0x21:  # extension: introducer, label, then sub-blocks
            at += 2
        else:
            break
        while at < len(data) and data[at]:  # sub-blocks, each led by its length
            at += data[at] + 1
        at += 1
    return width, height


HEADER_READERS: dict[str, Callable[[bytes], tuple[int, int] | None]] = {
    "image/png": png_size,
    "image/jpeg": jpeg_size,
    "image/webp": webp_size,
    "image/gif": gif_size,
}
# Peak bytes a `shrink` holds per pixel, measured at 36 Mpx with Pillow 13 (bench/, "7. image bombs"): libwebp
# keeps two canvases and a copy of the frame; a progressive JPEG a full coefficient buffer whatever the scale.
DECODE_BYTES_PER_PIXEL = {"image/webp": 18, "image/jpeg": 7, "image/gif": 5, "image/png": 4}
RESIZABLE_MODES = frozenset({"L", "LA", "RGB", "RGBA"})
PILLOW_FORMATS = {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WEBP", "image/gif": "GIF"}


def measure(data: bytes, max_pixels: int) -> tuple[int, int]:
    """Width and height from the header, refused when over `max_pixels` before any decoder sees the bytes."""
    size = pixel_size(data)
    if size is None:
        raise ImageDecodeError("its header declares no readable width and height")
    if size[0] * size[1] > max_pixels:
        raise ImageTooLarge(size, max_pixels)
    return size


def encoded_size(byte_count: int) -> int:
    """Bytes of base64 text for `byte_count` bytes: what a host actually receives."""
    return 4 * ((byte_count + 2) // 3)


@dataclass(frozen=True)
class Reencoded:
    data: bytes
    mime: str
    width: int
    height: int


def decode_cost(data: bytes) -> int:
    """Bytes of memory decoding `data` may take, from its header; 0 when it will not be decoded at all."""
    size = pixel_size(data)
    mime = sniff_mime(data)
    return size[0] * size[1] * DECODE_BYTES_PER_PIXEL[mime] if size and mime else 0


def shrink(data: bytes, *, max_side: int, max_bytes: int, max_pixels: int) -> Reencoded:
    """A copy no longer than `max_side` pixels and no larger than `max_bytes`, as JPEG (PNG if it has alpha).

    Images over `max_pixels` are refused from their header, before anything is decoded; a JPEG is decoded
    at the smallest of 1/2, 1/4 or 1/8 scale that still covers `max_side`. Each try that is too large
    scales the next by the square root of how far over it was, so big originals fit in one or two encodes;
    at 16 pixels it stops, so a caller with a tiny `max_bytes` must check the result.
    """
    from PIL import Image

    width, height = measure(data, max_pixels)
    ratio = min(1.0, max_side / max(width, height))
    try:
        # Only the format that was measured: no other plugin gets to read the bytes its own way.
        with Image.open(io.BytesIO(data), formats=[PILLOW_FORMATS[sniff_mime(data) or ""]]) as original:
            # Only JPEG decoders can scale while decoding; for other formats this does nothing.
            original.draft(None, (max(1, math.ceil(width * ratio)), max(1, math.ceil(height * ratio))))
            original.load()
            has_alpha = original.mode in ("RGBA", "LA", "PA") or "transparency" in original.info
            mode = "RGBA" if has_alpha else "RGB"
            # Resized before it is converted where the mode allows, so the full-size image is never copied.
            image: Image.Image
            if original.mode in RESIZABLE_MODES:
                image = original
            else:
                image = original.convert("L" if original.mode == "1" else mode)
            # reducing_gap: a fast integer reduce first, then a proper resample of the rest.
            image.thumbnail((max_side, max_side), reducing_gap=3.0)
            image = image.convert(mode)  # a copy: the small image outlives the file
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageDecodeError(str(exc)) from None
    fmt, mime = ("PNG", "image/png") if has_alpha else ("JPEG", "image/jpeg")
    while True:
        buffer = io.BytesIO()
        if fmt == "JPEG":
            image.save(buffer, fmt, quality=82)
        else:
            image.save(buffer, fmt, optimize=True)
        if buffer.tell() <= max_bytes or max(image.size) <= 16:
            return Reencoded(buffer.getvalue(), mime, image.width, image.height)
        scale = min(0.9, 0.95 * (max_bytes / buffer.tell()) ** 0.5)
        side = max(16, int(max(image.size) * scale))
        image.thumbnail((side, side), reducing_gap=3.0)


@dataclass(frozen=True)
class SavedImage:
    # Where storage keeps it: the owner's prefix and the name.
    key: str
    name: str
    mime: str
    size_bytes: int
    # Where it is, for people: a file path or an s3:// URL.
    location: str

    @property
    def uri(self) -> str:
        return RESOURCE_PREFIX + self.name


class StoredImageTooLarge(OSError):
    """An object in storage with an image's name, too large to serve; it was not read."""


class ImageStore:
    """Generated images in storage (`storage.py`): each written once, exactly as received, under its owner's
    prefix (`principals.owner_prefix`), so only its owner can read it back.

    Only names `save` makes are served: other files a user keeps in the folder stay private.
    """

    def __init__(self, storage: Storage, max_bytes: int = MAX_IMAGE_BYTES) -> None:
        self.storage = storage
        self.max_bytes = max_bytes

    async def ensure_writable(self) -> None:
        """Checked before an upstream call, so a generated image is never lost for want of storage."""
        await self.storage.check()

    async def save(self, data: bytes, mime: str, label: str, owner: str) -> SavedImage:
        """Store under a name that cannot collide; `label` (user text) is reduced to a safe slug."""
        name = f"{time.strftime('%Y%m%d-%H%M%S')}-{slug(label)}-{secrets.token_hex(16)}.{EXTENSIONS[mime]}"
        key = owner + name
        await self.storage.put(key, data, mime)
        return SavedImage(key=key, name=name, mime=mime, size_bytes=len(data), location=self.storage.location(key))

    async def open(self, name: str, owner: str) -> tuple[bytes, str]:
        """Bytes and type of an image `save` wrote for `owner`, by its name; also images of earlier runs.

        Raises FileNotFoundError for any other name, object or owner (never saying which), and
        StoredImageTooLarge, before reading, for one over `max_bytes`.
        """
        if not SAFE_NAME.fullmatch(name):
            raise FileNotFoundError(name)
        try:
            data = await self.storage.get(owner + name, self.max_bytes)
        except StoredObjectTooLarge as exc:
            raise StoredImageTooLarge(self._too_large(name, exc.args[0])) from None
        mime = sniff_mime(data)
        if mime is None or not name.endswith("." + EXTENSIONS[mime]):
            raise FileNotFoundError(name)
        return data, mime

    async def link(self, image: SavedImage) -> str | None:
        return await self.storage.link(image.key)

    def _too_large(self, name: str, size: int) -> str:
        return (
            f"the image `{name}` is {size:,} bytes, over the {self.max_bytes:,} bytes this server serves "
            "(ONLYSQ_MCP_MAX_IMAGE_BYTES)"
        )


def slug(text: str, limit: int = 40) -> str:
    """At most `limit` ASCII letters, digits and hyphens from `text` for a file name: other scripts are
    transliterated (`Рыжая лиса` → `ryzhaya-lisa`, an emoji becomes its name), anything else separates words;
    `image` when nothing is left."""
    # Imported here, not at the top: the server starts without it, and it loads its tables only when an
    # image is saved.
    from anyascii import anyascii

    # Only the start can reach the name; a prefix four times `limit` fills it unless it is mostly punctuation.
    ascii_text = anyascii(text[: 4 * limit])
    words = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return words[:limit].rstrip("-") or "image"
