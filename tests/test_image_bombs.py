"""Images that would cost the server more memory than they are worth, through real server processes.

Image bombs (tiny files declaring huge dimensions) from callers and from upstreams, files that report a
size of 0, and a disk that fills while images arrive.
"""

from __future__ import annotations

import base64
import sys
from pathlib import Path

import anyio
import pytest
from mcp import Client, StdioServerParameters

from tests import image_bombs
from tests.fake_upstream import CHAT_PATH, IMAGEN_PATH
from tests.helpers import make_image, start_http_server, stop_http_server, text_of, upstream_env

pytestmark = pytest.mark.anyio

PEAK_LIMIT_KIB = 400 * 1024
BOMBS_PER_KIND = 4
# Runs the server under a resource limit: python -c LIMITED RLIMIT_X value command...
LIMITED = (
    "import os, resource, sys; "
    "resource.setrlimit(getattr(resource, sys.argv[1]), (int(sys.argv[2]), int(sys.argv[2]))); "
    "os.execv(sys.argv[3], sys.argv[3:])"
)


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def peak_kib(pid: int) -> int:
    """VmHWM: the most resident memory the process has had."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def limited(params: StdioServerParameters, limit: str, value: int) -> StdioServerParameters:
    """The same stdio server, started under `resource.setrlimit(limit, value)`."""
    return params.model_copy(
        update={"command": sys.executable, "args": ["-c", LIMITED, limit, str(value), params.command, *params.args]}
    )


async def test_bombs_over_http_are_refused_and_memory_stays_bounded(fake_upstream, tmp_path):
    fake_upstream.reset()
    server = start_http_server(upstream_env(fake_upstream.base_url, tmp_path / "images"), tmp_path)
    try:
        results: dict[str, list[str]] = {kind: [] for kind in image_bombs.BUILDERS}

        async def describe(client: Client, kind: str) -> None:
            bomb = image_bombs.BUILDERS[kind]()
            result = await client.call_tool("describe_image", {"image": data_uri(bomb)})
            assert result.is_error
            results[kind].append(text_of(result))

        async with Client(server.url) as client:
            await client.call_tool("list_models", {})
            baseline = peak_kib(server.process.pid)
            async with anyio.create_task_group() as group:
                for kind in image_bombs.BUILDERS:
                    for _ in range(BOMBS_PER_KIND):
                        group.start_soon(describe, client, kind)
        peak = peak_kib(server.process.pid)
        assert server.process.poll() is None
    finally:
        stop_http_server(server)
    for texts in results.values():
        assert len(texts) == BOMBS_PER_KIND
        for text in texts:
            assert "the data URI is 13,300×13,300 pixels (176.9 megapixels)" in text
            assert "over the 40,000,000-pixel limit (ONLYSQ_MCP_MAX_INPUT_PIXELS); pass a smaller image" in text
    assert fake_upstream.requests_to(CHAT_PATH) == []
    # Before the check one WebP bomb alone took the server from ~80 MB to 3.6 GB.
    assert peak < PEAK_LIMIT_KIB, f"peak RSS {peak / 1024:.0f} MiB (before the bombs {baseline / 1024:.0f} MiB)"


async def test_an_image_just_under_the_limit_is_still_described(make_settings, upstream):
    from onlysq_mcp.server import app_factory

    server = app_factory(make_settings(ONLYSQ_MCP_MAX_INPUT_PIXELS=1_000_000))
    async with Client(server) as client:
        fits = await client.call_tool("describe_image", {"image": data_uri(image_bombs.png(1000, 1000))})
        over = await client.call_tool("describe_image", {"image": data_uri(image_bombs.png(1000, 1001))})
    assert not fits.is_error, text_of(fits)
    assert over.is_error and "1,000×1,001 pixels" in text_of(over) and "1,000,000-pixel limit" in text_of(over)


async def test_bomb_from_the_upstream_is_a_failure_not_a_file(stdio_params, upstream, output_dir):
    upstream.add_fault(IMAGEN_PATH, "bomb")
    async with Client(stdio_params) as client:
        result = await client.call_tool("generate_image", {"prompt": "two pictures", "count": 2})
        upstream.add_fault(IMAGEN_PATH, "bomb")
        alone = await client.call_tool("generate_image", {"prompt": "one picture"})
    assert not result.is_error, text_of(result)
    [failure] = result.structured_content["failures"]
    assert failure == (
        "OnlySq: returned an image that is 13,300×13,300 pixels (176.9 megapixels), over the 40,000,000-pixel "
        "limit (ONLYSQ_MCP_MAX_INPUT_PIXELS); it was discarded, not saved"
    )
    assert len(result.structured_content["images"]) == 1
    assert len(list(output_dir.iterdir())) == 1  # the good image; the bomb was not written
    assert alone.is_error
    assert "No image was generated. OnlySq: returned an image that is 13,300×13,300" in text_of(alone)


async def test_proc_files_that_report_size_zero_are_read_with_the_cap(stdio_params, upstream):
    params = stdio_params.model_copy(update={"env": stdio_params.env | {"ONLYSQ_MCP_MAX_INPUT_BYTES": "1024"}})
    smaps = Path("/proc/self/smaps")
    assert smaps.stat().st_size == 0 and len(smaps.read_bytes()) > 1025  # what the server is given
    async with Client(params) as client:
        result = await client.call_tool("describe_image", {"image": str(smaps)})
    assert result.is_error
    assert "is over the 1,024-byte limit (ONLYSQ_MCP_MAX_INPUT_BYTES), although it reports 0 bytes" in text_of(result)
    assert upstream.requests_to(CHAT_PATH) == []


@pytest.mark.parametrize("delivery", ["preview", "link"])
async def test_full_disk_returns_the_received_images_inline(stdio_params, upstream, output_dir, delivery):
    # Files over 100 bytes fail with EFBIG (Python ignores SIGXFSZ); the fake's 64 px PNGs are larger.
    params = stdio_params.model_copy(update={"env": stdio_params.env | {"ONLYSQ_MCP_IMAGE_DELIVERY": delivery}})
    async with Client(limited(params, "RLIMIT_FSIZE", 100)) as client:
        result = await client.call_tool("generate_image", {"prompt": "no room", "count": 2})
    assert not result.is_error, text_of(result)
    text = text_of(result)
    shown = [block for block in result.content if block.type == "image"]
    assert len(shown) == 2
    assert all(base64.b64decode(block.data).startswith(b"\x89PNG") for block in shown)
    assert [block.type for block in result.content].count("resource_link") == 0
    images = result.structured_content["images"]
    assert [(image["path"], image["uri"], image["inline"]) for image in images] == [(None, None, "original")] * 2
    assert text.count("NOT saved (see the failure below); this result is its only copy, shown inline") == 2
    assert "an image was received but not saved: cannot write to the output folder" in text
    assert "(File too large); set ONLYSQ_MCP_OUTPUT_DIR" in text
    assert [path.name for path in output_dir.iterdir() if not path.name.startswith(".")] == []


async def test_disk_filling_midway_keeps_saved_and_unsaved_images(make_settings, upstream, output_dir, monkeypatch):
    from onlysq_mcp.images import ImageStore
    from onlysq_mcp.server import app_factory

    real_save = ImageStore.save
    calls = 0

    async def save_then_fill(self, data, mime, label, owner):
        nonlocal calls
        calls += 1
        if calls > 1:
            raise OSError(f"cannot write to the output folder {self.storage} (No space left on device); set ...")
        return await real_save(self, data, mime, label, owner)

    monkeypatch.setattr(ImageStore, "save", save_then_fill)
    upstream.image_long_side = 512
    upstream.image_noise = True  # ~800 kB each: previews, within the budget
    server = app_factory(make_settings(ONLYSQ_MCP_INLINE_BUDGET=300_000))
    async with Client(server) as client:
        result = await client.call_tool("generate_image", {"prompt": "filling up", "count": 3})
    assert not result.is_error, text_of(result)
    images = result.structured_content["images"]
    assert sorted(image["path"] is None for image in images) == [False, True, True]
    assert {image["inline"] for image in images} == {"preview"}
    shown = [block for block in result.content if block.type == "image"]
    assert len(shown) == 3 and sum(len(block.data) for block in shown) <= 300_000
    assert (
        result.structured_content["failures"]
        == [
            f"an image was received but not saved: cannot write to the output folder {output_dir} (No space left on "
            "device); set ..."
        ]
        * 2
    )
    assert len(list(output_dir.glob("*.png"))) == 1


async def test_describe_image_still_works_on_a_real_jpeg(make_settings, upstream):
    from onlysq_mcp.server import app_factory

    big = make_image("JPEG", (4000, 3000), noise=True)
    server = app_factory(make_settings())
    async with Client(server) as client:
        result = await client.call_tool("describe_image", {"image": data_uri(big, "image/jpeg")})
    assert not result.is_error, text_of(result)
    assert result.structured_content["downscaled"] is True
    assert (result.structured_content["width"], result.structured_content["height"]) == (4000, 3000)


async def test_decode_budget_keeps_estimated_memory_within_bounds():
    import threading
    import time

    from onlysq_mcp.decoding import DecodeBudget

    budget = DecodeBudget(100, threads=8)
    lock = threading.Lock()
    running: list[int] = []
    seen: list[list[int]] = []

    def work(cost: int) -> int:
        with lock:
            running.append(cost)
            seen.append(list(running))
        time.sleep(0.02)
        with lock:
            running.remove(cost)
        return cost

    costs = [40, 40, 40, 150, 10, 0, 60, 30]
    done: list[int] = []

    async def one(cost: int) -> None:
        done.append(await budget.run(cost, lambda: work(cost)))

    async with anyio.create_task_group() as group:
        for cost in costs:
            group.start_soon(one, cost)
            await anyio.sleep(0.001)  # arrival order
    assert sorted(done) == sorted(costs)
    assert all(sum(now) <= 100 or now == [150] for now in seen), seen
    assert max(len(now) for now in seen) >= 2  # small decodes do run together
