"""The files in examples/ work as written: host configs have the shape `onlysq-mcp config <host>` prints and
launch the server once their placeholder path is this venv's python, and the Claude Code script runs the
`claude mcp add` line of this installation (the Python scripts: tests/test_example_scripts.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mcp import Client, StdioServerParameters

from onlysq_mcp import host_config
from tests.helpers import clean_env, server_command, text_of, upstream_env

EXAMPLES = Path(__file__).parent.parent / "examples"
HTTP_URL = "http://127.0.0.1:8000/mcp"


def load(name: str) -> dict:
    return json.loads((EXAMPLES / name).read_text(encoding="utf-8"))


# The documented venv path of the examples; the README says to use `onlysq-mcp config <host>` instead.
EXAMPLE_PYTHON = "/home/you/onlysq-mcp/.venv/bin/python"
STDIO_EXAMPLES = [
    ("claude-desktop", "claude_desktop_config.json"),
    ("cursor", "cursor_mcp.json"),
    ("vscode", "vscode_mcp.json"),
]


def stdio_entry(host: str, name: str) -> dict:
    return load(name)[host_config.servers_key(host)]["onlysq"]


@pytest.mark.parametrize(("host", "name"), STDIO_EXAMPLES)
def test_stdio_examples_are_what_config_prints(host, name):
    """Each example is the entry `onlysq-mcp config <host>` gives with only ONLYSQ_API_KEY=openai set."""
    env = host_config.ServerEnv({"ONLYSQ_API_KEY": "openai"})
    expected = host_config.build_entry(host, "onlysq", [EXAMPLE_PYTHON, "-m", "onlysq_mcp"], env, False)
    assert stdio_entry(host, name) == expected.server


@pytest.mark.anyio
@pytest.mark.parametrize(("host", "name"), STDIO_EXAMPLES)
async def test_stdio_examples_launch_the_server(host, name, upstream, output_dir, tmp_path):
    entry = stdio_entry(host, name)
    assert entry["command"] == EXAMPLE_PYTHON
    # The example's env, plus the fake upstream and this checkout, launched as the host would.
    env = entry["env"] | upstream_env(upstream.base_url, output_dir, yandex=False, ONLYSQ_API_KEY="openai")
    params = StdioServerParameters(
        command=sys.executable,
        args=entry["args"],
        env=env | {"PYTHONPATH": os.environ.get("PYTHONPATH", "")},
        cwd=str(tmp_path),
    )
    async with Client(params) as client:
        result = await client.call_tool("chat", {"prompt": "from the example"})
    assert text_of(result) == "Echo: from the example"


def test_cursor_config_has_an_http_entry_with_a_token():
    http = load("cursor_mcp.json")["mcpServers"]["onlysq-http"]
    assert http["url"] == HTTP_URL
    assert http["headers"]["Authorization"] == "Bearer ${env:ONLYSQ_MCP_HTTP_TOKEN}"


def test_vscode_config_has_stdio_and_http_servers():
    config = load("vscode_mcp.json")
    servers = config["servers"]
    assert servers["onlysq"]["type"] == "stdio"
    http = servers["onlysq-http"]
    assert http["type"] == "http"
    assert http["url"] == HTTP_URL
    token_inputs = {i["id"] for i in config["inputs"] if i["type"] == "promptString" and i.get("password")}
    (token_id,) = token_inputs
    assert http["headers"]["Authorization"] == f"Bearer ${{input:{token_id}}}"


@pytest.fixture
def fake_claude(tmp_path: Path) -> Path:
    """A `claude` on PATH that records its arguments, one JSON list per call."""
    folder = tmp_path / "bin"
    folder.mkdir()
    record = tmp_path / "calls.jsonl"
    script = folder / "claude"
    script.write_text(
        f"#!{sys.executable}\nimport json, sys\n"
        f"with open({str(record)!r}, 'a') as f:\n    f.write(json.dumps(sys.argv[1:]) + '\\n')\n"
    )
    script.chmod(0o755)
    return record


def run_script(record: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    bash = shutil.which("bash")
    assert bash, "bash is needed to run examples/claude_code.sh"
    # The fake `claude` first, then the folder of the installed `onlysq-mcp`, as in an active venv.
    path = os.pathsep.join([str(record.parent / "bin"), str(Path(server_command()[0]).parent), os.environ["PATH"]])
    return subprocess.run(
        [bash, str(EXAMPLES / "claude_code.sh"), *args],
        cwd=record.parent,
        env=clean_env(PATH=path, **env),
        capture_output=True,
        text=True,
        timeout=30,
    )


def run_claude_code(record: Path, *args: str, **env: str) -> list[list[str]]:
    done = run_script(record, *args, **env)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in record.read_text().splitlines()]


def test_claude_code_script_adds_this_installation(fake_claude):
    """The stdio form adds what `onlysq-mcp config claude-code` prints, secrets included, never shown."""
    calls = run_claude_code(fake_claude, ONLYSQ_API_KEY="openai", YANDEX_API_KEY="y-secret", YANDEX_FOLDER_ID="f1")
    (call,) = calls
    assert call[:7] == ["mcp", "add", "onlysq", "--scope", "user", "--transport", "stdio"]
    assert call[7:13] == [
        "--env",
        "ONLYSQ_API_KEY=openai",
        "--env",
        "YANDEX_API_KEY=y-secret",
        "--env",
        "YANDEX_FOLDER_ID=f1",
    ]
    command = call[call.index("--") + 1 :]
    assert Path(command[0]).is_absolute() and command[1:] == ["-m", "onlysq_mcp"]


def test_claude_code_script_stops_on_invalid_settings(fake_claude):
    done = run_script(fake_claude, YANDEX_API_KEY="k")
    assert done.returncode != 0 and "YANDEX_FOLDER_ID" in done.stderr
    assert not fake_claude.exists()


def test_claude_code_script_adds_the_http_server_with_the_token(fake_claude):
    calls = run_claude_code(fake_claude, "http", ONLYSQ_MCP_HTTP_TOKEN="s3cret-token")
    assert calls == [
        ["mcp", "add", "--transport", "http", "onlysq", HTTP_URL, "--header", "Authorization: Bearer s3cret-token"]
    ]
