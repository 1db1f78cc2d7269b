"""A bounded load test over streamable HTTP (loopback only; stops by itself).

20 concurrent clients × 50 calls mixing all four tools, with faults injected upstream. Afterwards the
server still answers, every call got a result or a clear tool error, no saved image is truncated, and
the server's memory is within a small margin of what it was after warm-up.
"""

from __future__ import annotations

import base64
import io
import random
from pathlib import Path

import anyio
import pytest
from mcp import Client
from PIL import Image

from onlysq_mcp.catalogue import FETCH_CONNECTIONS
from tests.helpers import start_http_server, stop_http_server, upstream_env

pytestmark = pytest.mark.anyio

CLIENTS = 20
CALLS_PER_CLIENT = 50


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def small_png() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), "blue").save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def mixed_calls(rng: random.Random, image: str) -> list[tuple[str, dict]]:
    choices = [
        ("chat", {"prompt": "load"}),
        ("chat", {"prompt": "load", "model": "gemini-2.5-flash", "system": "be brief"}),
        ("list_models", {"kind": "chat"}),
        ("generate_image", {"prompt": "load test", "aspect_ratio": "16:9"}),
        ("describe_image", {"image": image, "question": "what?"}),
        ("chat", {"prompt": ""}),  # a tool error by design
    ]
    return [rng.choice(choices) for _ in range(CALLS_PER_CLIENT)]


async def run_load(url: str, fake, seed: int) -> tuple[int, int, list[str]]:
    image = small_png()
    ok = errors = 0
    unclear: list[str] = []

    async def one_client(index: int) -> None:
        nonlocal ok, errors
        rng = random.Random(seed * 100 + index)
        async with Client(url) as client:
            for position, (tool, arguments) in enumerate(mixed_calls(rng, image)):
                if index == 0 and position % 10 == 0:
                    fake.add_fault("/ai/v2", "status", status=503)
                    fake.add_fault("/ai/imagen", "status", status=500)
                    fake.add_fault("/ai/v2", "malformed")
                result = await client.call_tool(tool, arguments)
                if result.is_error:
                    errors += 1
                    text = result.content[0].text
                    if not text.startswith(f"Error executing tool {tool}: ") or "Traceback" in text:
                        unclear.append(text)
                else:
                    ok += 1

    with anyio.fail_after(240):
        async with anyio.create_task_group() as group:
            for index in range(CLIENTS):
                group.start_soon(one_client, index)
    return ok, errors, unclear


async def test_load_mixed_tools_with_faults(fake_upstream, tmp_path):
    fake_upstream.reset()
    output = tmp_path / "images"
    server = start_http_server(upstream_env(fake_upstream.base_url, output, ONLYSQ_MCP_MAX_CONCURRENCY="8"), tmp_path)
    try:
        await run_load(server.url, fake_upstream, seed=1)  # warm-up: caches, pools, lazy imports
        before = rss_kib(server.process.pid)
        ok, errors, unclear = await run_load(server.url, fake_upstream, seed=2)
        after = rss_kib(server.process.pid)
        async with Client(server.url) as client:
            final = await client.call_tool("chat", {"prompt": "still up"})
        most_at_once = fake_upstream.max_in_flight
    finally:
        stop_http_server(server)
        fake_upstream.reset()

    assert ok + errors == CLIENTS * CALLS_PER_CLIENT
    assert unclear == []
    assert ok > errors  # faults are a minority; most calls succeed
    assert final.content[0].text == "Echo: still up"
    # ONLYSQ_MCP_MAX_CONCURRENCY (and the background catalogue fetch's own room) bounds every upstream connection
    assert 1 < most_at_once <= 8 + FETCH_CONNECTIONS
    files = list(output.iterdir())
    assert files and not [f for f in files if f.name.startswith(".")]  # no partial files left behind
    for path in files:
        with Image.open(path) as picture:
            picture.load()  # raises on a truncated file
    assert after - before < 30 * 1024, f"RSS grew by {after - before} KiB under load"
