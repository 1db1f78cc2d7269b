"""The files in examples/ work as written: host configs parse and launch the server with uvx, and the Claude
Code script runs the documented `claude mcp add` commands (the Python scripts: tests/test_example_scripts.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import clean_env

EXAMPLES = Path(__file__).parent.parent / "examples"
HTTP_URL = "http://127.0.0.1:8000/mcp"


def load(name: str) -> dict:
    return json.loads((EXAMPLES / name).read_text(encoding="utf-8"))


def assert_uvx_stdio(entry: dict) -> None:
    assert entry["command"] == "uvx"
    assert entry["args"] == ["onlysq-mcp"]
    assert entry.get("type", "stdio") == "stdio"


@pytest.mark.parametrize("name", ["claude_desktop_config.json", "cursor_mcp.json"])
def test_mcp_servers_configs_launch_uvx_onlysq_mcp(name):
    servers = load(name)["mcpServers"]
    assert_uvx_stdio(servers["onlysq"])
    assert set(servers["onlysq"].get("env", {})) <= {"ONLYSQ_API_KEY"}


def test_cursor_config_has_an_http_entry_with_a_token():
    http = load("cursor_mcp.json")["mcpServers"]["onlysq-http"]
    assert http["url"] == HTTP_URL
    assert http["headers"]["Authorization"] == "Bearer ${env:ONLYSQ_MCP_HTTP_TOKEN}"


def test_vscode_config_has_stdio_and_http_servers():
    config = load("vscode_mcp.json")
    servers = config["servers"]
    assert_uvx_stdio(servers["onlysq"])
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


def run_claude_code(record: Path, *args: str, **env: str) -> list[list[str]]:
    bash = shutil.which("bash")
    assert bash, "bash is needed to run examples/claude_code.sh"
    path = f"{record.parent / 'bin'}{os.pathsep}{os.environ['PATH']}"
    done = subprocess.run(
        [bash, str(EXAMPLES / "claude_code.sh"), *args],
        env=clean_env(PATH=path, **env),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in record.read_text().splitlines()]


def test_claude_code_script_adds_the_stdio_server(fake_claude):
    calls = run_claude_code(fake_claude)
    assert calls == [["mcp", "add", "onlysq", "-e", "ONLYSQ_API_KEY=openai", "--", "uvx", "onlysq-mcp"]]


def test_claude_code_script_adds_the_http_server_with_the_token(fake_claude):
    calls = run_claude_code(fake_claude, "http", ONLYSQ_MCP_HTTP_TOKEN="s3cret-token")
    assert calls == [
        ["mcp", "add", "--transport", "http", "onlysq", HTTP_URL, "--header", "Authorization: Bearer s3cret-token"]
    ]
