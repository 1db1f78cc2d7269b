"""Image bytes: sniff the type, measure, save without collisions, make previews that fit a budget.

Pillow is imported only inside the functions that need it, so the server starts without it.
"""

from __future__ import annotations

import io
import os
import re
import secrets
import stat
import time
from dataclasses import dataclass
from pathlib import Path

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


def pixel_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from the header (Pillow reads no pixels for this); None if unreadable."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def encoded_size(byte_count: int) -> int:
    """Bytes of base64 text for `byte_count` bytes: what a host actually receives."""
    return 4 * ((byte_count + 2) // 3)


class ImageDecodeError(Exception):
    """Pillow cannot decode the bytes: corrupt, truncated, or more pixels than it will safely open."""


@dataclass(frozen=True)
class Reencoded:
    data: bytes
    mime: str
    width: int
    height: int


def shrink(data: bytes, *, max_side: int, max_bytes: int) -> Reencoded:
    """A copy no longer than `max_side` pixels and no larger than `max_bytes`, as JPEG (PNG if it has alpha).

    Each try that is too large scales the next by the square root of how far over it was, so big
    originals fit in one or two encodes; at 16 pixels it stops, so a caller with a tiny `max_bytes`
    must check the result.
    """
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as original:
            original.load()
            has_alpha = original.mode in ("RGBA", "LA", "PA") or "transparency" in original.info
            mode = "RGBA" if has_alpha else "RGB"
            image = original.convert(mode) if original.mode != mode else original.copy()
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageDecodeError(str(exc)) from None
    fmt, mime = ("PNG", "image/png") if has_alpha else ("JPEG", "image/jpeg")
    # reducing_gap: a fast integer reduce first, then a proper resample of the rest.
    image.thumbnail((max_side, max_side), reducing_gap=3.0)
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
    path: Path
    name: str
    mime: str
    size_bytes: int

    @property
    def uri(self) -> str:
        return RESOURCE_PREFIX + self.name


class StoredImageTooLarge(OSError):
    """A file in the output folder with an image's name, too large to serve; it was not read."""


class ImageStore:
    """The output folder: every generated image is written here once, exactly as received.

    Only what `save` wrote is served back: other files a user keeps in the folder stay private.
    """

    def __init__(self, folder: Path, max_bytes: int = MAX_IMAGE_BYTES) -> None:
        # Absolute, because file resources need an absolute path, and `~` as users write it in config.
        self.folder = folder.expanduser().resolve()
        self.max_bytes = max_bytes

    def ensure_writable(self) -> None:
        """Checked before an upstream call, so a generated image is never lost for want of a folder."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            probe = self.folder / f".write-test-{secrets.token_hex(4)}"
            probe.touch()
            probe.unlink()
        except OSError as exc:
            raise OSError(
                f"cannot write to the output folder {self.folder} ({exc.strerror}); set ONLYSQ_MCP_OUTPUT_DIR "
                "to a folder this server can write to"
            ) from None

    def save(self, data: bytes, mime: str, label: str) -> SavedImage:
        """Write atomically under a name that cannot collide; `label` (user text) is reduced to a safe slug."""
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"{time.strftime('%Y%m%d-%H%M%S')}-{slug(label)}-{secrets.token_hex(16)}.{EXTENSIONS[mime]}"
        final = self.folder / name
        partial = self.folder / f".{name}.part"
        try:
            # A reader never sees a half-written file: it appears under its name only when complete.
            with open(partial, "xb") as handle:
                handle.write(data)
            os.replace(partial, final)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            raise OSError(
                f"cannot write to the output folder {self.folder} ({exc.strerror}); set ONLYSQ_MCP_OUTPUT_DIR "
                "to a folder this server can write to"
            ) from None
        return SavedImage(path=final, name=name, mime=mime, size_bytes=len(data))

    def open(self, name: str) -> tuple[bytes, str]:
        """Bytes and type of an image `save` wrote, by its file name; also images of earlier runs.

        Raises FileNotFoundError for any other name or file (never saying which), and StoredImageTooLarge,
        before reading, for a file over `max_bytes`.
        """
        path = self.folder / name
        # No symlinks: a link in the folder must not serve a file from elsewhere (O_NOFOLLOW closes the
        # race where the platform has it). O_NONBLOCK: opening a FIFO named like an image must not hang.
        if not SAFE_NAME.fullmatch(name) or path.resolve().parent != self.folder:
            raise FileNotFoundError(name)
        try:
            fd = os.open(path, os.O_RDONLY | _flag("O_NOFOLLOW") | _flag("O_NONBLOCK") | _flag("O_BINARY"))
        except OSError:
            raise FileNotFoundError(name) from None
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise FileNotFoundError(name)
            if info.st_size > self.max_bytes:
                raise StoredImageTooLarge(self._too_large(name, info.st_size))
            # Capped even after the size check: the file may grow between the two.
            data = handle.read(self.max_bytes + 1)
        if len(data) > self.max_bytes:
            raise StoredImageTooLarge(self._too_large(name, len(data)))
        mime = sniff_mime(data)
        if mime is None or not name.endswith("." + EXTENSIONS[mime]):
            raise FileNotFoundError(name)
        return data, mime

    def _too_large(self, name: str, size: int) -> str:
        return (
            f"the image `{name}` is {size:,} bytes, over the {self.max_bytes:,} bytes this server serves "
            "(ONLYSQ_MCP_MAX_IMAGE_BYTES)"
        )


def _flag(name: str) -> int:
    # Each platform has only some of these open flags.
    return int(getattr(os, name, 0))


def slug(text: str, limit: int = 40) -> str:
    words = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return words[:limit].rstrip("-") or "image"
