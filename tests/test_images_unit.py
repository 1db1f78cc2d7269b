"""Image bytes without a server: type sniffing, previews that fit a budget, the output folder."""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path

import pytest
from PIL import Image

from onlysq_mcp import images, storage
from onlysq_mcp.image_tools import deliver
from onlysq_mcp.images import (
    ImageDecodeError,
    ImageStore,
    ImageTooLarge,
    encoded_size,
    measure,
    pixel_size,
    shrink,
    sniff_mime,
)
from onlysq_mcp.principals import owner_prefix
from onlysq_mcp.settings import ImageDelivery
from onlysq_mcp.storage import FolderStorage
from tests import image_bombs
from tests.helpers import make_image

MPX = 40_000_000  # the default ONLYSQ_MCP_MAX_INPUT_PIXELS


@pytest.mark.parametrize(
    ("fmt", "mime"),
    [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp"), ("GIF", "image/gif")],
)
def test_sniff_mime_reads_the_bytes(fmt, mime):
    assert sniff_mime(make_image(fmt)) == mime


@pytest.mark.parametrize(
    "junk",
    [b"", b"hello world", b"<html>", b"RIFF\0\0\0\0WAVEfmt ", b"\x89PNG", b"GIF90a", b'{"files": []}'],
)
def test_sniff_mime_rejects_junk(junk):
    assert sniff_mime(junk) is None


def test_pixel_size_and_unreadable_bytes():
    assert pixel_size(make_image("JPEG", (123, 45))) == (123, 45)
    assert pixel_size(b"\x89PNG\r\n\x1a\n" + b"\0" * 20) is None
    assert pixel_size(b"nothing") is None


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF"])
@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "P"])
def test_pixel_size_agrees_with_pillow(fmt, mode):
    if fmt == "JPEG" and mode in ("RGBA", "P"):
        return
    data = make_image(fmt, (123, 45), mode=mode)
    with Image.open(io.BytesIO(data)) as image:
        assert pixel_size(data) == image.size == (123, 45)


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "GIF"])
def test_pixel_size_of_animations_and_lossy_webp(fmt):
    frames = [Image.new("RGB", (70, 30), color) for color in ("red", "blue")]
    out = io.BytesIO()
    frames[0].save(out, fmt, save_all=True, append_images=frames[1:], **({"quality": 50} if fmt == "WEBP" else {}))
    assert pixel_size(out.getvalue()) == (70, 30)
    lossy = io.BytesIO()
    Image.new("RGB", (99, 77)).save(lossy, "WEBP", quality=50)
    assert lossy.getvalue()[12:16] == b"VP8 " and pixel_size(lossy.getvalue()) == (99, 77)


def test_pixel_size_of_jpeg_reads_past_other_segments():
    out = io.BytesIO()
    Image.new("RGB", (99, 77)).save(
        out, "JPEG", progressive=True, exif=b"Exif\0\0" + b"\0" * 5000, icc_profile=b"x" * 300
    )
    data = out.getvalue()
    assert pixel_size(data) == (99, 77)
    # A stray byte between segments is skipped, as libjpeg does.
    end_of_app0 = 4 + int.from_bytes(data[4:6], "big")
    assert pixel_size(data[:end_of_app0] + b"\x00\x00" + data[end_of_app0:]) == (99, 77)


@pytest.mark.parametrize("kind", sorted(image_bombs.BUILDERS))
def test_bombs_are_measured_from_their_header(kind):
    bomb = image_bombs.BUILDERS[kind]()
    assert len(bomb) < 25_000
    assert pixel_size(bomb) == (image_bombs.BOMB_SIDE, image_bombs.BOMB_SIDE)
    with pytest.raises(ImageTooLarge, match=r"13,300×13,300 pixels \(176\.9 megapixels\).*ONLYSQ_MCP_MAX_INPUT_PIXELS"):
        measure(bomb, MPX)
    with pytest.raises(ImageTooLarge):
        shrink(bomb, max_side=1024, max_bytes=100_000, max_pixels=MPX)
    assert measure(image_bombs.BUILDERS[kind](300, 200), MPX) == (300, 200)


def test_gif_frame_larger_than_its_screen_counts():
    bomb = image_bombs.gif(9000, 9000, screen=(16, 16))
    assert pixel_size(bomb) == (9000, 9000)
    with pytest.raises(ImageTooLarge):
        measure(bomb, MPX)


@pytest.mark.parametrize("kind", sorted(image_bombs.BUILDERS))
def test_truncated_headers_are_unreadable(kind):
    bomb = image_bombs.BUILDERS[kind]()
    for cut in (10, 14, 20, 24):
        size = pixel_size(bomb[:cut])
        assert size is None or size == (image_bombs.BOMB_SIDE, image_bombs.BOMB_SIDE)
    with pytest.raises(ImageDecodeError):
        measure(bomb[:12], MPX)


def test_jpeg_is_decoded_at_a_reduced_scale(monkeypatch):
    from PIL import JpegImagePlugin

    asked = []
    draft = JpegImagePlugin.JpegImageFile.draft
    monkeypatch.setattr(
        JpegImagePlugin.JpegImageFile, "draft", lambda self, mode, size: asked.append(size) or draft(self, mode, size)
    )
    loaded = []
    load = JpegImagePlugin.JpegImageFile.load
    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "load", lambda self: loaded.append(self.size) or load(self))
    small = shrink(make_image("JPEG", (4000, 1000)), max_side=500, max_bytes=1_000_000, max_pixels=MPX)
    assert (small.width, small.height) == (500, 125)
    assert asked == [(500, 125)]
    assert loaded[0] == (500, 125)  # decoded at 1/8 scale, not at 4000x1000


def test_encoded_size_is_the_base64_length():
    for n in range(0, 50):
        assert encoded_size(n) == len(base64.b64encode(b"x" * n))


def test_shrink_respects_max_side():
    small = shrink(make_image("PNG", (3000, 200)), max_side=1024, max_bytes=10_000_000, max_pixels=MPX)
    assert (small.width, small.height) == (1024, 68)
    assert pixel_size(small.data) == (1024, 68)
    assert small.mime == "image/jpeg" == sniff_mime(small.data)


def test_shrink_respects_max_bytes():
    original = make_image("PNG", (512, 512), noise=True)
    small = shrink(original, max_side=4096, max_bytes=20_000, max_pixels=MPX)
    assert len(small.data) <= 20_000 < len(original)
    assert max(small.width, small.height) < 512


def test_shrink_keeps_transparency_as_png():
    small = shrink(make_image("PNG", (300, 300), mode="RGBA"), max_side=100, max_bytes=1_000_000, max_pixels=MPX)
    assert small.mime == "image/png" == sniff_mime(small.data)
    assert (small.width, small.height) == (100, 100)


def test_shrink_refuses_undecodable_bytes():
    with pytest.raises(ImageDecodeError):
        shrink(make_image("PNG")[:40], max_side=100, max_bytes=1000, max_pixels=MPX)


def saved_image(data: bytes, mime: str = "image/png") -> images.SavedImage:
    name = f"20261127-100000-n-{os.urandom(16).hex()}.{images.EXTENSIONS[mime]}"
    return images.SavedImage(name, name, mime, len(data), f"/srv/images/{name}")


def folder_store(folder: Path, max_bytes: int = images.MAX_IMAGE_BYTES) -> ImageStore:
    return ImageStore(FolderStorage(folder), max_bytes)


def path_of(saved: images.SavedImage) -> Path:
    return Path(saved.location)


@pytest.mark.anyio
async def test_save_writes_exact_bytes_and_leaves_no_partial_file(tmp_path):
    store = folder_store(tmp_path / "out")
    data = make_image("JPEG")
    saved = await store.save(data, "image/jpeg", "A red square", "")
    assert path_of(saved).read_bytes() == data
    assert saved.name.endswith(".jpg") and "-a-red-square-" in saved.name
    assert saved.uri == "onlysq://images/" + saved.name
    assert saved.size_bytes == len(data)
    assert [p.name for p in (tmp_path / "out").iterdir()] == [saved.name]


@pytest.mark.anyio
async def test_save_is_atomic(tmp_path, monkeypatch):
    store = folder_store(tmp_path)
    data = make_image("PNG")
    seen: list[tuple[bytes, bool]] = []
    real_replace = os.replace

    def replace(src, dst):
        # At the moment the file takes its name it is complete, and nothing is under that name yet.
        seen.append((Path(src).read_bytes(), Path(dst).exists()))
        real_replace(src, dst)

    monkeypatch.setattr(storage.os, "replace", replace)
    saved = await store.save(data, "image/png", "x", "")
    assert seen == [(data, False)]
    assert path_of(saved).name == saved.name

    def broken(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(storage.os, "replace", broken)
    with pytest.raises(OSError, match="ONLYSQ_MCP_OUTPUT_DIR"):
        await store.save(data, "image/png", "y", "")
    assert [p.name for p in tmp_path.iterdir()] == [saved.name]


@pytest.mark.anyio
async def test_names_never_collide(tmp_path):
    store = folder_store(tmp_path)
    saved = [await store.save(b"%d" % i, "image/png", "same label", "") for i in range(300)]
    assert len({s.name for s in saved}) == 300
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(s.name for s in saved)
    assert all(path_of(s).read_bytes() == b"%d" % i for i, s in enumerate(saved))


@pytest.mark.anyio
@pytest.mark.parametrize(
    "label", ["../../etc/passwd", "/etc/passwd", "..\\..\\windows", "a/../../b", "", "🙂🙂", "..."]
)
async def test_label_becomes_a_safe_name_inside_the_folder(tmp_path, label):
    folder = tmp_path / "out"
    store = folder_store(folder)
    data = make_image("PNG")
    saved = await store.save(data, "image/png", label, "")
    assert path_of(saved).parent == folder.resolve()
    assert "/" not in saved.name and "\\" not in saved.name and ".." not in saved.name
    assert images.SAFE_NAME.fullmatch(saved.name)
    assert await store.open(saved.name, "") == (data, "image/png")
    assert list(tmp_path.iterdir()) == [folder]


@pytest.mark.anyio
async def test_open_refuses_names_outside_the_folder(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    secret = tmp_path / "secret.png"
    secret.write_bytes(make_image("PNG"))
    (folder / "link.png").symlink_to(secret)
    store = folder_store(folder)
    for name in ["../secret.png", "..%2Fsecret.png", str(secret), "link.png", "missing.png", "", ".hidden.png"]:
        with pytest.raises(FileNotFoundError):
            await store.open(name, "")
    good = await store.save(make_image("PNG"), "image/png", "ok", "")
    assert await store.open(good.name, "") == (path_of(good).read_bytes(), "image/png")


@pytest.mark.anyio
async def test_an_owner_reads_only_its_own_images(tmp_path):
    store = folder_store(tmp_path)
    alice, bob = owner_prefix("alice"), owner_prefix("bob")
    data = make_image("PNG")
    mine = await store.save(data, "image/png", "mine", alice)
    assert await store.open(mine.name, alice) == (data, "image/png")
    for other in (bob, ""):
        with pytest.raises(FileNotFoundError):
            await store.open(mine.name, other)
    # The owner's folder is named by a digest: neither the name nor a path trick reaches it.
    assert "alice" not in mine.location and path_of(mine).parent.parent == tmp_path / "users"


@pytest.mark.anyio
async def test_a_symlinked_owner_folder_is_not_followed(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    saved = await folder_store(elsewhere).save(make_image("PNG"), "image/png", "x", "")
    folder = tmp_path / "out"
    (folder / "users").mkdir(parents=True)
    (folder / owner_prefix("alice").rstrip("/")).symlink_to(elsewhere)
    with pytest.raises(FileNotFoundError):
        await folder_store(folder).open(saved.name, owner_prefix("alice"))


@pytest.mark.anyio
async def test_names_carry_128_random_bits(tmp_path):
    saved = await folder_store(tmp_path).save(make_image("PNG"), "image/png", "a cat", "")
    token = saved.name.rsplit("-", 1)[1].removesuffix(".png")
    assert len(token) == 32 and int(token, 16) >= 0


@pytest.mark.anyio
async def test_open_serves_only_images_this_store_could_have_written(tmp_path):
    store = folder_store(tmp_path)
    good = await store.save(make_image("JPEG"), "image/jpeg", "ok", "")
    stem = good.name.removesuffix(".jpg")
    (tmp_path / "notes.txt").write_text("private")
    (tmp_path / f"{stem}.png").write_text("text under an image's name")
    (tmp_path / f"{stem}.gif").write_bytes(path_of(good).read_bytes())  # a JPEG under a GIF's name
    os.mkfifo(tmp_path / f"{stem}.webp")  # would block a plain open
    for name in ["notes.txt", f"{stem}.png", f"{stem}.gif", f"{stem}.webp", f"{stem[:-1]}.jpg"]:
        with pytest.raises(FileNotFoundError):
            await store.open(name, "")
    assert await store.open(good.name, "") == (path_of(good).read_bytes(), "image/jpeg")


@pytest.mark.anyio
async def test_open_refuses_an_oversized_file_without_reading_it(tmp_path, monkeypatch):
    store = folder_store(tmp_path, max_bytes=1024)
    big = await store.save(make_image("PNG", (400, 400), noise=True), "image/png", "big", "")
    reads: list[int] = []
    real_fdopen = os.fdopen

    def fdopen(fd, mode):
        handle = real_fdopen(fd, mode)
        real_read = handle.read
        handle.read = lambda size=-1: reads.append(size) or real_read(size)
        return handle

    monkeypatch.setattr(storage.os, "fdopen", fdopen)
    with pytest.raises(images.StoredImageTooLarge, match="ONLYSQ_MCP_MAX_IMAGE_BYTES"):
        await store.open(big.name, "")
    assert reads == []


def test_store_folder_is_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert FolderStorage(Path("relative/images")).folder == tmp_path / "relative" / "images"
    assert FolderStorage(Path("~/pics")).folder == tmp_path / "home" / "pics"


@pytest.mark.anyio
async def test_ensure_writable_names_the_setting(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(OSError, match="ONLYSQ_MCP_OUTPUT_DIR") as caught:
        await folder_store(blocker / "images").ensure_writable()
    assert str(blocker / "images") in str(caught.value)
    await folder_store(tmp_path / "new" / "folder").ensure_writable()
    assert list((tmp_path / "new" / "folder").iterdir()) == []


@pytest.mark.parametrize(("count", "budget"), [(1, 10_000), (2, 50_001), (3, 10_002), (4, 120_000)])
def test_deliver_keeps_previews_within_the_budget(count, budget):
    originals = [make_image("PNG", (300, 200), noise=True) for _ in range(count)]
    saved = [(saved_image(data), data) for data in originals]
    blocks, files = deliver(saved, [], ImageDelivery.PREVIEW, budget, MPX, links=True, urls={})
    inline = [b for b in blocks if b.type == "image"]
    assert sum(len(b.data) for b in inline) <= budget
    assert all(f.inline in ("preview", "none") for f in files)
    assert [b.type for b in blocks].count("resource_link") == count
    for block in inline:
        assert sniff_mime(base64.b64decode(block.data)) == block.mime_type


def test_deliver_inlines_originals_that_fit_and_nothing_in_link_mode():
    data = make_image("WEBP", (64, 48))
    saved = [(saved_image(data, "image/webp"), data)]
    blocks, files = deliver(saved, [], ImageDelivery.PREVIEW, 10_000, MPX, links=True, urls={})
    assert base64.b64decode(blocks[0].data) == data and blocks[0].mime_type == "image/webp"
    assert (files[0].inline, files[0].width, files[0].height) == ("original", 64, 48)
    assert files[0].url is None
    url = "https://bucket.example/x.webp?X-Amz-Signature=0"
    blocks, files = deliver(saved, [], ImageDelivery.LINK, 10_000, MPX, links=True, urls={saved[0][0].name: url})
    assert [b.type for b in blocks] == ["resource_link"] and files[0].inline == "none"
    assert files[0].url == url
