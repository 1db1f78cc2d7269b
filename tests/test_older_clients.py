"""Clients of protocol versions before 2025-06-18 get results they accept: no `resource_link` blocks.

`structuredContent` and `outputSchema`, also of 2025-06-18, stay: SDK 1.12 already checks one against the
other, and a result may carry keys its version does not define (`Result` in the 2024-11-05 schema has
`[key: string]: unknown`; SDK 1.12's `ResultSchema` is `.passthrough()`), so older clients pass them over.

The official TypeScript SDK 1.12 (pinned in tests/node as `mcp-sdk-1-12`, negotiating 2025-03-26) rejects a
whole `tools/call` result with a content type it does not know. `tests/node/old_client.mjs` connects it to a
real server process over stdio and over streamable HTTP and makes the calls; each result must be accepted,
and its text must carry the URI and path of every image (or the job's URI) that a link would have carried.
"""

from __future__ import annotations

import base64
import json
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from onlysq_mcp.server import app_factory
from onlysq_mcp.tool_support import supports_resource_links
from tests.fake_upstream import FakeUpstream
from tests.helpers import PNG, clean_env, server_command, start_http_server, stop_http_server, upstream_env
from tests.node_tools import NodeTools

pytestmark = pytest.mark.anyio

# Long enough for a generation of the fake to finish on a busy machine, short enough to keep the test quick.
WAIT = "1.5"
SLOW = 4.0
TIMEOUT = 60


def run_old_client(node_clients: NodeTools, spec: dict[str, Any], env: dict[str, str], cwd: Path) -> dict[str, Any]:
    command = node_clients.old_client_cmd(json.dumps(spec))
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=TIMEOUT, cwd=cwd, env=env, stdin=subprocess.DEVNULL
    )
    assert done.returncode == 0, f"old client exited {done.returncode}\n{done.stdout}\n{done.stderr[-4000:]}"
    return json.loads(done.stdout)


def accepted(outcome: dict[str, Any]) -> dict[str, Any]:
    assert outcome["ok"], f"the 1.12 client rejected the result: {outcome['error']}"
    result = outcome["result"]
    assert not result.get("isError"), result
    assert {block["type"] for block in result["content"]} <= {"text", "image"}, result["content"]
    return result


def text(result: dict[str, Any]) -> str:
    return "\n".join(block["text"] for block in result["content"] if block["type"] == "text")


@pytest.mark.parametrize("delivery", ["preview", "link"])
@pytest.mark.parametrize("transport", ["stdio", "http"])
def test_sdk_1_12_accepts_every_generate_image_result(
    node_clients: NodeTools, upstream: FakeUpstream, tmp_path: Path, transport: str, delivery: str
) -> None:
    env = upstream_env(
        upstream.base_url, tmp_path / "images", ONLYSQ_MCP_IMAGE_WAIT=WAIT, ONLYSQ_MCP_IMAGE_DELIVERY=delivery
    )
    # The first generation outlasts the wait (a job handle); the second one is quick.
    upstream.add_fault("/ai/imagen", "delay", delay=SLOW, times=1)
    picture = "data:image/png;base64," + base64.b64encode(PNG).decode("ascii")
    calls = [
        {"name": "generate_image", "arguments": {"prompt": "a slow fox"}},
        {"name": "generate_image", "arguments": {"prompt": "a quick fox", "count": 2}},
        # The other tools too: the SDK checks their structuredContent against their outputSchema.
        {"name": "chat", "arguments": {"prompt": "hello"}},
        {"name": "describe_image", "arguments": {"image": picture}},
        {"name": "list_models", "arguments": {}},
    ]
    server = None
    if transport == "stdio":
        spec: dict[str, Any] = {"transport": "stdio", "command": server_command(), "calls": calls}
        client_env = clean_env(**env)
    else:
        server = start_http_server(env, tmp_path)
        spec = {"transport": "http", "url": server.url, "calls": calls}
        client_env = clean_env()
    try:
        output = run_old_client(node_clients, spec, client_env, tmp_path)
    finally:
        if server is not None:
            stop_http_server(server)
    assert "generate_image" in output["tools"]
    pending, done, chat, described, listed = (accepted(outcome) for outcome in output["results"])
    assert chat["structuredContent"]["reply"] == "Echo: hello" == text(chat)
    assert "I see a" in described["structuredContent"]["answer"]
    assert listed["structuredContent"]["models"]

    job = pending["structuredContent"]["job"]
    assert job["status"] == "running" and job["uri"].startswith("onlysq://jobs/")
    assert job["uri"] in text(pending)

    images = done["structuredContent"]["images"]
    assert len(images) == 2
    for image in images:
        assert image["uri"].startswith("onlysq://images/") and image["uri"] in text(done)
        assert image["path"] and image["path"] in text(done)
        assert Path(image["path"]).is_file()
    inline = [block for block in done["content"] if block["type"] == "image"]
    assert len(inline) == (0 if delivery == "link" else 2)


@pytest.mark.parametrize(
    ("version", "links"),
    [
        ("2024-11-05", False),
        ("2025-03-26", False),
        ("2025-06-18", True),
        ("2025-11-25", True),
        ("2026-07-28", True),
        ("2099-01-01", False),  # unknown: judged conservatively
        (None, False),
    ],
)
def test_resource_links_from_2025_06_18_on(version: str | None, links: bool) -> None:
    class Ctx:
        protocol_version = version

    assert supports_resource_links(Ctx()) is links  # type: ignore[arg-type]


async def test_current_clients_still_get_resource_links(make_settings, upstream) -> None:
    async with Client(app_factory(make_settings())) as client:
        result = await client.call_tool("generate_image", {"prompt": "a fox"})
    links = [block for block in result.content if block.type == "resource_link"]
    assert [str(link.uri) for link in links] == [result.structured_content["images"][0]["uri"]]


def test_a_2024_11_05_client_over_stdio_gets_text_and_images_only(upstream: FakeUpstream, tmp_path: Path) -> None:
    """The oldest version the server negotiates, spoken line by line as such a client would (no SDK needed)."""
    env = clean_env(**upstream_env(upstream.base_url, tmp_path / "images"))
    process = subprocess.Popen(
        server_command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=tmp_path, env=env, text=True
    )
    assert process.stdin is not None and process.stdout is not None
    # A hung server must fail the test, not hang it: readline() below would wait forever.
    watchdog = threading.Timer(TIMEOUT, process.kill)
    watchdog.start()
    try:
        messages = [
            {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "initialize",
                "params": {
                    "protocolVersion": "2024-11-05",
                    "capabilities": {},
                    "clientInfo": {"name": "old", "version": "0"},
                },
            },
            {"jsonrpc": "2.0", "method": "notifications/initialized"},
            {
                "jsonrpc": "2.0",
                "id": 2,
                "method": "tools/call",
                "params": {"name": "generate_image", "arguments": {"prompt": "a fox"}},
            },
        ]
        process.stdin.write("".join(json.dumps(message) + "\n" for message in messages))
        process.stdin.flush()
        responses: dict[int, dict[str, Any]] = {}
        while 2 not in responses:
            line = process.stdout.readline()
            assert line, "the server closed stdout before answering"
            message = json.loads(line)
            if "id" in message and "method" not in message:
                responses[message["id"]] = message
    finally:
        watchdog.cancel()
        process.kill()
        process.wait()
    assert responses[1]["result"]["protocolVersion"] == "2024-11-05"
    result = responses[2]["result"]
    assert [block["type"] for block in result["content"]] == ["text", "image"]
    [image] = result["structuredContent"]["images"]
    assert image["uri"] in result["content"][0]["text"] and image["path"] in result["content"][0]["text"]
