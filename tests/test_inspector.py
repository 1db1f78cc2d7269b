"""The MCP Inspector (the official reference client, CLI mode) against the real server, over stdio and HTTP.

Each test runs `node22 mcp-inspector --cli <target> --method ... --format json` as a subprocess, exactly as
a user would from a shell, and checks its JSON output. Over stdio the Inspector launches the installed
`onlysq-mcp` with the fake upstream's settings passed by `-e`; over HTTP it connects to a running
`onlysq-mcp --transport http`. Versions are pinned in tests/node/package.json.
"""

from __future__ import annotations

import base64
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.helpers import clean_env, server_command, upstream_env
from tests.node_tools import NodeTools

TOOLS = {"chat", "list_models", "generate_image", "describe_image"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TIMEOUT = 60


@dataclass(frozen=True)
class Target:
    transport: str
    args: list[str]  # what follows `--cli`: the server (command or URL) and how to reach it
    workdir: Path


# stdio with the front door (the default) and without it (ONLYSQ_MCP_FAST_START=false): a host sees the same.
@pytest.fixture(params=["stdio", "stdio-no-front-door", "http"])
def target(request: pytest.FixtureRequest, upstream, tmp_path: Path) -> Target:
    if request.param.startswith("stdio"):
        env = upstream_env(upstream.base_url, tmp_path / "images")
        if request.param == "stdio-no-front-door":
            env["ONLYSQ_MCP_FAST_START"] = "false"
        env_flags = [flag for key, value in env.items() for flag in ("-e", f"{key}={value}")]
        return Target("stdio", [*env_flags, *server_command()], tmp_path)
    http_server = request.getfixturevalue("http_server")
    return Target("http", [http_server.url, "--transport", "http"], tmp_path)


def inspect(node_clients: NodeTools, target: Target, *args: str) -> dict[str, Any]:
    """Run one Inspector CLI command; return the `result` of its JSON output."""
    command = node_clients.inspector_cmd("--cli", *target.args, *args, "--format", "json")
    # HOME in the test's folder: the Inspector keeps a catalog and client config under ~/.mcp-inspector.
    # cwd there too, so the stdio server cannot pick up a developer's .env.
    env = clean_env(HOME=str(target.workdir), NO_COLOR="1")
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=TIMEOUT, cwd=target.workdir, env=env, stdin=subprocess.DEVNULL
    )
    assert done.returncode == 0, f"inspector exited {done.returncode}\n{done.stdout}\n{done.stderr}"
    output = json.loads(done.stdout)
    assert "result" in output, output
    return output["result"]


def call(node_clients: NodeTools, target: Target, tool: str, **arguments: str) -> dict[str, Any]:
    tool_args = [f"{key}={value}" for key, value in arguments.items()]
    result = inspect(node_clients, target, "--method", "tools/call", "--tool-name", tool, "--tool-arg", *tool_args)
    assert result.get("isError") is not True, result
    return result


def texts(result: dict[str, Any]) -> list[str]:
    return [block["text"] for block in result["content"] if block["type"] == "text"]


@pytest.mark.parametrize("era", ["legacy", "modern"])
def test_lists_the_four_tools(node_clients, target, era):
    result = inspect(node_clients, target, "--protocol-era", era, "--method", "tools/list")
    tools = {tool["name"]: tool for tool in result["tools"]}
    assert set(tools) == TOOLS
    assert all(tool["description"] and tool["inputSchema"]["type"] == "object" for tool in tools.values())


def test_chat(node_clients, target):
    result = call(node_clients, target, "chat", prompt=f"hello over {target.transport}")
    assert texts(result) == [f"Echo: hello over {target.transport}"]
    assert result["structuredContent"]["reply"] == f"Echo: hello over {target.transport}"


def test_list_models(node_clients, target):
    result = call(node_clients, target, "list_models", kind="image")
    models = result["structuredContent"]["models"]
    assert models, result
    assert "flux" in {model["id"] for model in models}
    assert "flux" in texts(result)[0]


def test_generate_image(node_clients, target):
    result = call(node_clients, target, "generate_image", prompt="a red fox in the snow")
    images = [block for block in result["content"] if block["type"] == "image"]
    assert len(images) == 1, result["content"]
    assert images[0]["mimeType"] == "image/png"
    assert base64.b64decode(images[0]["data"]).startswith(PNG_MAGIC)
    links = [block for block in result["content"] if block["type"] == "resource_link"]
    assert links and links[0]["uri"].startswith("onlysq://images/")


def test_describe_image(node_clients, target, tmp_path):
    picture = tmp_path / "square.png"
    Image.new("RGB", (32, 24), "teal").save(picture)
    if target.transport == "stdio":
        image = str(picture)  # the server runs on this machine, in this test's folder
    else:
        image = "data:image/png;base64," + base64.b64encode(picture.read_bytes()).decode("ascii")
    result = call(node_clients, target, "describe_image", image=image, question="What colour is it?")
    answer = texts(result)[0]
    assert "I see a" in answer
    assert "32x24" in answer
    assert result["structuredContent"]["width"] == 32
