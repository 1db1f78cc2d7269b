"""`onlysq-mcp config <host>`: the printed entry per host, secrets as placeholders, `--write` merging.

The command in every entry is `<sys.executable> -m onlysq_mcp` (see onlysq_mcp/host_config.py for why);
the end-to-end test launches exactly what the claude-desktop entry says and lists the tools over stdio.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
from mcp import Client, StdioServerParameters

from onlysq_mcp import host_config
from tests.helpers import TEST_KEY, YANDEX_FOLDER, YANDEX_KEY, clean_env, upstream_env

pytestmark = pytest.mark.anyio

TOOLS = {"chat", "list_models", "generate_image", "describe_image"}
NOW = datetime(2026, 1, 2, 3, 4, 5)
COMMAND = [str(Path(sys.executable).absolute()), "-m", "onlysq_mcp"]


def run_config(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The real command, as a user types it; PYTHONPATH carries the code under test."""
    return subprocess.run(
        [sys.executable, "-m", "onlysq_mcp", "config", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        # Only the variables of the test: the suite may run with ONLYSQ_MCP_FAST_START set (clean_env).
        env={k: v for k, v in clean_env(**env).items() if k in env or not k.startswith("ONLYSQ_")}
        | {"PYTHONPATH": os.environ.get("PYTHONPATH", "")},
    )


@pytest.fixture
def env(upstream, output_dir) -> dict[str, str]:
    return upstream_env(upstream.base_url, output_dir, ONLYSQ_CHAT_MODEL="gpt-4o-mini")


def entry_env(snippet: dict, key: str = "mcpServers", name: str = "onlysq") -> dict[str, str]:
    return snippet[key][name]["env"]


async def test_claude_desktop_entry_launches_the_server(env, tmp_path):
    printed = run_config(env, tmp_path, "claude-desktop", "--show-secrets")
    assert printed.returncode == 0, printed.stderr
    server = json.loads(printed.stdout)["mcpServers"]["onlysq"]
    assert server["command"] == COMMAND[0] and Path(server["command"]).is_absolute()
    assert server["args"] == COMMAND[1:]
    # Every variable set and nothing else; values as Settings reads them (`10` comes back as `10.0`).
    assert server["env"].keys() == env.keys()
    for name in ("ONLYSQ_API_KEY", "YANDEX_API_KEY", "YANDEX_FOLDER_ID", "ONLYSQ_MCP_OUTPUT_DIR"):
        assert server["env"][name] == env[name]
    assert server["env"]["ONLYSQ_BASE_URL"].rstrip("/") == env["ONLYSQ_BASE_URL"]

    # Launched from elsewhere, as a host does: only the entry's env (over the SDK's default environment,
    # like hosts pass HOME and PATH) plus PYTHONPATH so that the subprocess runs this checkout.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    params = StdioServerParameters(
        command=server["command"],
        args=server["args"],
        env=server["env"] | {"PYTHONPATH": os.environ.get("PYTHONPATH", "")},
        cwd=str(elsewhere),
    )
    async with Client(params) as client:
        tools = await client.list_tools()
        assert {tool.name for tool in tools.tools} == TOOLS
        result = await client.call_tool("chat", {"prompt": "hello"})
        assert not result.is_error


@pytest.mark.parametrize("host", ["claude-desktop", "cursor", "vscode"])
def test_secrets_are_placeholders_unless_asked(env, tmp_path, host):
    key = host_config.servers_key(host)
    hidden = run_config(env, tmp_path, host)
    assert hidden.returncode == 0, hidden.stderr
    for secret in (TEST_KEY, YANDEX_KEY):
        assert secret not in hidden.stdout and secret not in hidden.stderr
    values = entry_env(json.loads(hidden.stdout), key)
    assert values["YANDEX_FOLDER_ID"] == YANDEX_FOLDER  # not a secret: shown as is
    assert values["ONLYSQ_BASE_URL"].rstrip("/") == env["ONLYSQ_BASE_URL"]
    if host == "vscode":
        snippet = json.loads(hidden.stdout)
        assert values["YANDEX_API_KEY"] == "${input:onlysq-yandex-api-key}"
        assert {
            "type": "promptString",
            "id": "onlysq-yandex-api-key",
            "description": "YANDEX_API_KEY",
            "password": True,
        } in snippet["inputs"]
    else:
        assert values["YANDEX_API_KEY"] == "<YANDEX_API_KEY>"
        assert values["ONLYSQ_API_KEY"] == "<ONLYSQ_API_KEY>"
        assert "YANDEX_API_KEY" in hidden.stderr  # the user is told what to fill in

    shown = run_config(env, tmp_path, host, "--show-secrets")
    values = entry_env(json.loads(shown.stdout), key)
    assert values["YANDEX_API_KEY"] == YANDEX_KEY and values["ONLYSQ_API_KEY"] == TEST_KEY


def test_public_key_and_url_password(upstream, output_dir, tmp_path):
    """The public key is no secret; a base URL carrying a password is one."""
    url = upstream.base_url.replace("http://", "http://user:pa55word@")
    env = upstream_env(url, output_dir, yandex=False, ONLYSQ_API_KEY="openai")
    printed = run_config(env, tmp_path, "cursor")
    values = entry_env(json.loads(printed.stdout))
    assert values["ONLYSQ_API_KEY"] == "openai"
    assert values["ONLYSQ_BASE_URL"] == "<ONLYSQ_BASE_URL>"
    assert "pa55word" not in printed.stdout


def test_relative_output_dir_becomes_absolute(upstream, tmp_path):
    env = upstream_env(upstream.base_url, Path("pictures"), yandex=False)
    printed = run_config(env, tmp_path, "cursor")
    assert entry_env(json.loads(printed.stdout))["ONLYSQ_MCP_OUTPUT_DIR"] == str(tmp_path / "pictures")


def test_claude_code_prints_a_claude_mcp_add_line(env, tmp_path):
    printed = run_config(env, tmp_path, "claude-code", "--name", "sq")
    assert printed.returncode == 0, printed.stderr
    words = shlex.split(printed.stdout)
    assert words[:8] == ["claude", "mcp", "add", "sq", "--scope", "user", "--transport", "stdio"]
    assert words[words.index("--") + 1 :] == COMMAND
    pairs = [words[i + 1] for i, word in enumerate(words) if word == "--env"]
    assert f"YANDEX_FOLDER_ID={YANDEX_FOLDER}" in pairs and "YANDEX_API_KEY=<YANDEX_API_KEY>" in pairs
    assert YANDEX_KEY not in printed.stdout


def test_nothing_set_gives_an_empty_env(tmp_path):
    printed = run_config({}, tmp_path, "claude-desktop")
    assert json.loads(printed.stdout)["mcpServers"]["onlysq"]["env"] == {}


def test_invalid_settings_are_refused(tmp_path):
    printed = run_config({"YANDEX_API_KEY": "k"}, tmp_path, "claude-desktop")
    assert printed.returncode == 2 and "YANDEX_FOLDER_ID" in printed.stderr and not printed.stdout


HOME = Path("/home/u")
PATHS = [
    ("claude-desktop", "darwin", {}, HOME / "Library/Application Support/Claude/claude_desktop_config.json"),
    ("claude-desktop", "win32", {"APPDATA": "/w/Roaming"}, Path("/w/Roaming/Claude/claude_desktop_config.json")),
    ("claude-desktop", "win32", {}, HOME / "AppData/Roaming/Claude/claude_desktop_config.json"),
    ("claude-desktop", "linux", {}, HOME / ".config/Claude/claude_desktop_config.json"),
    ("claude-desktop", "linux", {"XDG_CONFIG_HOME": "/x"}, Path("/x/Claude/claude_desktop_config.json")),
    ("vscode", "darwin", {}, HOME / "Library/Application Support/Code/User/mcp.json"),
    ("vscode", "win32", {"APPDATA": "/w/Roaming"}, Path("/w/Roaming/Code/User/mcp.json")),
    ("vscode", "linux", {}, HOME / ".config/Code/User/mcp.json"),
    ("cursor", "win32", {"APPDATA": "/w/Roaming"}, HOME / ".cursor/mcp.json"),
    ("cursor", "darwin", {}, HOME / ".cursor/mcp.json"),
    ("claude-code", "linux", {}, HOME / ".claude.json"),
    ("claude-code", "win32", {"APPDATA": "/w/Roaming"}, HOME / ".claude.json"),
]


@pytest.mark.parametrize(("host", "platform", "environ", "expected"), PATHS)
def test_config_path_per_os(host, platform, environ, expected):
    assert host_config.config_path(host, platform, environ, HOME) == expected


def make_entry(host: str, name: str = "onlysq") -> host_config.Entry:
    env = host_config.ServerEnv({"YANDEX_API_KEY": "k", "YANDEX_FOLDER_ID": "f"}, frozenset({"YANDEX_API_KEY"}))
    return host_config.build_entry(host, name, COMMAND, env, show_secrets=False)


@pytest.mark.parametrize("platform", ["linux", "darwin", "win32"])
@pytest.mark.parametrize("host", host_config.HOSTS)
def test_write_merges_and_backs_up(tmp_path, host, platform):
    home = tmp_path / "home"
    environ = {"APPDATA": str(tmp_path / "appdata")}
    path = host_config.config_path(host, platform, environ, home)
    key = host_config.servers_key(host)
    existing = {
        "theme": "dark",
        key: {"other": {"command": "other-server"}, "onlysq": {"command": "stale"}},
        "inputs": [{"type": "promptString", "id": "keep-me", "description": "x", "password": True}],
    }
    path.parent.mkdir(parents=True)
    original = json.dumps(existing)
    path.write_text(original)

    backup = host_config.write_config(host, path, "onlysq", make_entry(host), NOW)

    assert backup == path.with_name(f"{path.name}.bak-20260102-030405")
    assert backup.read_text() == original
    merged = json.loads(path.read_text())
    assert merged["theme"] == "dark"
    assert merged[key]["other"] == {"command": "other-server"}
    assert merged[key]["onlysq"] == make_entry(host).server
    ids = [item["id"] for item in merged["inputs"]]
    assert ids == (["keep-me", "onlysq-yandex-api-key"] if host == "vscode" else ["keep-me"])

    # Written again: the entry is replaced, not doubled, and the first backup is not overwritten.
    second = host_config.write_config(host, path, "onlysq", make_entry(host), NOW)
    assert second != backup and backup.read_text() == original
    assert [item["id"] for item in json.loads(path.read_text())["inputs"]] == ids


def test_write_creates_missing_folders(tmp_path):
    path = host_config.config_path("claude-desktop", "darwin", {}, tmp_path)
    assert host_config.write_config("claude-desktop", path, "sq", make_entry("claude-desktop", "sq"), NOW) is None
    assert json.loads(path.read_text()) == {"mcpServers": {"sq": make_entry("claude-desktop", "sq").server}}
    assert list(path.parent.iterdir()) == [path]  # no backup of nothing, no temporary left behind


def test_write_through_a_symlink_keeps_the_link(tmp_path):
    real = tmp_path / "dotfiles" / "mcp.json"
    real.parent.mkdir()
    real.write_text('{"mcpServers": {}}')
    link = tmp_path / "mcp.json"
    link.symlink_to(real)
    backup = host_config.write_config("cursor", link, "onlysq", make_entry("cursor"), NOW)
    assert link.is_symlink() and backup.parent == real.parent
    assert json.loads(real.read_text())["mcpServers"]["onlysq"] == make_entry("cursor").server


@pytest.mark.parametrize(
    "content",
    ['{"mcpServers": {"a": 1},}', "// comment\n{}", "[1, 2]", '{"mcpServers": []}', '{"inputs": {}}', "\xff\xfe"],
)
def test_unusable_file_is_refused_untouched(tmp_path, content):
    path = tmp_path / "mcp.json"
    path.write_bytes(content.encode("latin-1"))
    with pytest.raises(host_config.HostConfigError, match=r"nothing was written"):
        host_config.write_config("cursor", path, "onlysq", make_entry("cursor"), NOW)
    assert path.read_bytes() == content.encode("latin-1")
    assert list(tmp_path.iterdir()) == [path]


def test_oversized_file_is_refused_untouched(tmp_path, monkeypatch):
    monkeypatch.setattr(host_config, "MAX_CONFIG_BYTES", 100)
    path = tmp_path / "mcp.json"
    path.write_text(json.dumps({"mcpServers": {}, "pad": "x" * 100}))
    before = path.read_bytes()
    with pytest.raises(host_config.HostConfigError, match="larger than 100 bytes"):
        host_config.write_config("cursor", path, "onlysq", make_entry("cursor"), NOW)
    assert path.read_bytes() == before and list(tmp_path.iterdir()) == [path]


def test_cli_write_uses_home_and_reports(env, tmp_path):
    home = tmp_path / "home"
    path = home / ".cursor" / "mcp.json"
    path.parent.mkdir(parents=True)
    path.write_text('{"mcpServers": {"other": {"command": "x"}}}')
    written = run_config(env | {"HOME": str(home)}, tmp_path, "cursor", "--write", "--name", "sq")
    assert written.returncode == 0, written.stderr
    assert written.stdout == ""
    merged = json.loads(path.read_text())
    assert set(merged["mcpServers"]) == {"other", "sq"}
    assert merged["mcpServers"]["sq"]["env"]["YANDEX_API_KEY"] == "<YANDEX_API_KEY>"
    assert str(path) in written.stderr and ".bak-" in written.stderr

    path.write_text("{broken")
    refused = run_config(env | {"HOME": str(home)}, tmp_path, "cursor", "--write")
    assert refused.returncode == 1 and "not plain JSON" in refused.stderr
    assert path.read_text() == "{broken"


def test_config_help_does_not_load_the_server(tmp_path):
    code = (
        "import sys\nfrom onlysq_mcp.cli import main\n"
        "try:\n    main(['config', '--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('mcp', 'httpx2', 'PIL', 'uvicorn', 'pydantic') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path, env=os.environ.copy()
    )
    assert result.returncode == 0, result.stderr
    assert "claude-desktop" in result.stdout and result.stdout.strip().endswith("[]")
