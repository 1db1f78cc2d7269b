"""Image bombs: tiny files that declare huge dimensions, one builder per format the server accepts.

Each builder makes a small, well-formed file whose header declares `width`×`height` pixels, so a decoder
that trusts the header allocates (and a convert or resize then touches) width×height×4 bytes or more.
Used by the tests and by `bench/benchmarks.py` (the `bombs` benchmark).
"""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image

BOMB_SIDE = 13_300  # 177 Mpx: just under the 179 Mpx Pillow refuses on its own


def gif(width: int = BOMB_SIDE, height: int = BOMB_SIDE, *, screen: tuple[int, int] | None = None) -> bytes:
    """A 36-byte GIF: one frame of width×height; `screen` sets a smaller logical screen than the frame."""
    screen_w, screen_h = screen or (width, height)
    header = b"GIF89a" + struct.pack("<HHBBB", screen_w, screen_h, 0, 0, 0)
    # Graphic control extension with disposal method 2 ("restore to background").
    control = b"\x21\xf9\x04\x08\x00\x00\x00\x00"
    descriptor = b"," + struct.pack("<HHHHB", 0, 0, width, height, 0)
    # LZW with a 2-bit minimum code size: a clear code (4) then end-of-information (5), 3 bits each.
    pixels = b"\x02" + b"\x01\x2c" + b"\x00"
    return header + control + descriptor + pixels + b";"


def png(width: int = BOMB_SIDE, height: int = BOMB_SIDE) -> bytes:
    """A 1-bit greyscale PNG of zeros: each row is a filter byte and width/8 bytes, compressing ~1000:1."""
    row = b"\x00" * (1 + (width + 7) // 8)
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


class _Bits:
    """Bits packed least significant first, as the VP8L bitstream reads them."""

    def __init__(self) -> None:
        self.value = 0
        self.count = 0

    def put(self, value: int, bits: int) -> None:
        self.value |= value << self.count
        self.count += bits

    def bytes(self) -> bytes:
        return self.value.to_bytes((self.count + 7) // 8, "little")


def webp(width: int = BOMB_SIDE, height: int = BOMB_SIDE) -> bytes:
    """A 34-byte lossless WebP (VP8L): every prefix code has one symbol, so each pixel costs zero bits.

    Bitstream layout from RFC 9649 (WebP Lossless Bitstream), sections 3, 4 and 6.
    """
    bits = _Bits()
    bits.put(0x2F, 8)  # signature
    bits.put(width - 1, 14)
    bits.put(height - 1, 14)
    bits.put(1, 1)  # alpha_is_used
    bits.put(0, 3)  # version
    bits.put(0, 1)  # no transform
    bits.put(0, 1)  # no color cache
    bits.put(0, 1)  # no meta prefix codes
    for symbol in (0, 0, 0, 255, 0):  # green, red, blue, alpha, distance
        bits.put(1, 1)  # simple code
        bits.put(0, 1)  # one symbol
        bits.put(1, 1)  # 8-bit symbol
        bits.put(symbol, 8)
    payload = bits.bytes()
    if len(payload) % 2:
        payload += b"\x00"
    chunk = b"VP8L" + struct.pack("<I", len(payload)) + payload
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


def jpeg(width: int = BOMB_SIDE, height: int = BOMB_SIDE) -> bytes:
    """A progressive JPEG of 16×16 pixels whose frame header (SOF2) is patched to width×height.

    libjpeg zeroes a coefficient buffer for the whole declared image before it reads the first scan:
    about 6 bytes per pixel for YCbCr 4:4:4.
    """
    out = io.BytesIO()
    Image.new("RGB", (16, 16), "teal").save(out, "JPEG", progressive=True, subsampling=0)
    data = bytearray(out.getvalue())
    at = data.index(b"\xff\xc2")
    # SOF2: marker, length (2), precision (1), height (2), width (2).
    struct.pack_into(">HH", data, at + 5, height, width)
    return bytes(data)


BUILDERS = {"GIF": gif, "PNG": png, "WebP": webp, "JPEG": jpeg}
