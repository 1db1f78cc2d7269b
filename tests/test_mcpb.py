"""The Claude Desktop bundle: scripts/build_mcpb.py stages it, the pinned official `mcpb` CLI validates and
packs it, and the packed entry point serves MCP over stdio with the environment the manifest maps.

Claude Desktop starts the bundle with `uv run --directory <bundle> server/main.py`, which installs the
dependencies from the internet; the suite runs the same entry point with this interpreter (which has them),
so it checks everything in the bundle except uv's download.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import pytest
from mcp import Client, StdioServerParameters

from onlysq_mcp import __version__
from onlysq_mcp.settings import Settings
from scripts import build_mcpb
from tests import node_tools
from tests.helpers import TEST_KEY, YANDEX_FOLDER, YANDEX_KEY, text_of

pytestmark = pytest.mark.anyio

TOOLS = {"chat", "list_models", "generate_image", "describe_image"}


@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("mcpb") / "bundle"
    build_mcpb.stage(folder)
    return folder


@pytest.fixture(scope="module")
def packed(staged: Path, node_clients: node_tools.NodeTools, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("packed") / "onlysq-mcp.mcpb"
    result = mcpb(node_clients, "pack", str(staged), str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    return out


def mcpb(tools: node_tools.NodeTools, *args: str) -> subprocess.CompletedProcess[str]:
    entry = node_tools.bin_entry("@anthropic-ai/mcpb", "mcpb")
    return subprocess.run([str(tools.node), str(entry), *args], capture_output=True, text=True, timeout=120)


def manifest_of(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "manifest.json").read_text())


def test_official_cli_validates_the_manifest(staged, node_clients):
    result = mcpb(node_clients, "validate", str(staged / "manifest.json"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Manifest schema validation passes" in result.stdout


def test_official_cli_rejects_a_broken_manifest(staged, node_clients, tmp_path):
    """The validation above can fail: the same manifest without its `server` does."""
    broken = manifest_of(staged)
    del broken["server"]
    (tmp_path / "manifest.json").write_text(json.dumps(broken))
    assert mcpb(node_clients, "validate", str(tmp_path / "manifest.json")).returncode != 0


def test_packed_bundle_holds_the_package_and_nothing_stale(packed):
    with zipfile.ZipFile(packed) as archive:
        names = set(archive.namelist())
    package = Path(build_mcpb.PACKAGE)
    sources = {
        path.relative_to(package.parent).as_posix()
        for path in package.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert sources <= names
    assert {"manifest.json", "pyproject.toml", build_mcpb.ENTRY_POINT} <= names
    assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc")]


def test_manifest_asks_for_the_keys_and_folder(staged):
    manifest = manifest_of(staged)
    assert manifest["version"] == __version__
    assert manifest["server"]["type"] == "uv"
    assert {tool["name"] for tool in manifest["tools"]} == TOOLS
    config = manifest["user_config"]
    assert set(config) == {"onlysq_api_key", "yandex_api_key", "yandex_folder_id", "output_dir"}
    assert config["onlysq_api_key"]["default"] == "openai" and config["onlysq_api_key"]["sensitive"] is True
    assert config["yandex_api_key"]["sensitive"] is True
    assert config["output_dir"]["type"] == "directory"
    # Every entry optional with a default: Claude Desktop leaves `${user_config.x}` as literal text for a
    # key with neither an answer nor a default (mcpb src/shared/config.ts, getMcpConfigForManifest).
    assert all(entry["required"] is False and "default" in entry for entry in config.values())
    env = manifest["server"]["mcp_config"]["env"]
    for variable, value in env.items():
        assert variable.lower() in Settings.model_fields
        assert re.fullmatch(r"\$\{user_config\.(\w+)\}", value).group(1) in config
    assert set(env) == {"ONLYSQ_API_KEY", "YANDEX_API_KEY", "YANDEX_FOLDER_ID", "ONLYSQ_MCP_OUTPUT_DIR"}


def test_bundle_pyproject_lists_the_project_dependencies(staged):
    bundle = tomllib.loads((staged / "pyproject.toml").read_text())
    project = tomllib.loads((Path(build_mcpb.ROOT) / "pyproject.toml").read_text())["project"]
    assert bundle["project"]["dependencies"] == project["dependencies"]
    assert bundle["project"]["requires-python"] == project["requires-python"]
    assert bundle["tool"]["uv"]["package"] is False


def substitute(manifest: dict[str, Any], answers: dict[str, str], bundle: Path) -> dict[str, str]:
    """The server env Claude Desktop derives: defaults, then the user's answers, into `${...}` (mcpb config.ts)."""
    values = {key: entry.get("default", "") for key, entry in manifest["user_config"].items()} | answers
    variables = {f"user_config.{key}": str(value) for key, value in values.items()} | {"__dirname": str(bundle)}
    env = manifest["server"]["mcp_config"]["env"]
    return {name: re.sub(r"\$\{([^}]+)\}", lambda m: variables.get(m[1], m[0]), value) for name, value in env.items()}


@pytest.mark.parametrize("with_yandex", [True, False])
async def test_packed_entry_point_serves_mcp(packed, upstream, tmp_path, with_yandex):
    bundle = tmp_path / "unpacked"
    with zipfile.ZipFile(packed) as archive:
        archive.extractall(bundle)
    manifest = manifest_of(bundle)
    answers = {"onlysq_api_key": TEST_KEY, "output_dir": str(tmp_path / "pictures")}
    if with_yandex:
        answers |= {"yandex_api_key": YANDEX_KEY, "yandex_folder_id": YANDEX_FOLDER}
    env = substitute(manifest, answers, bundle)
    assert not any("${" in value for value in env.values())
    # The upstream URLs are not user_config entries; here they point the server at the fake.
    env |= {"ONLYSQ_BASE_URL": upstream.base_url, "YANDEX_BASE_URL": upstream.base_url}
    params = StdioServerParameters(
        command=sys.executable,
        args=[str(bundle / manifest["server"]["entry_point"])],
        # Over the SDK's default environment, which has no PYTHONPATH: the entry point must find the
        # package shipped in the bundle by itself.
        env=env,
        cwd=str(tmp_path),
    )
    async with Client(params) as client:
        assert {tool.name for tool in (await client.list_tools()).tools} == TOOLS
        result = await client.call_tool("chat", {"prompt": "from the bundle"})
        assert text_of(result) == "Echo: from the bundle"
        models = text_of(await client.call_tool("list_models", {}))
    assert ("yandexgpt" in models.lower()) is with_yandex


def test_entry_point_imports_the_bundled_package(packed, tmp_path):
    """Even where another onlysq_mcp is importable (this venv has one), the bundle runs its own copy."""
    bundle = tmp_path / "unpacked"
    with zipfile.ZipFile(packed) as archive:
        archive.extractall(bundle)
    code = (
        "import runpy, sys\nsys.argv = ['main.py', '--version']\n"
        f"try:\n    runpy.run_path({str(bundle / build_mcpb.ENTRY_POINT)!r}, run_name='__main__')\n"
        "except SystemExit:\n    pass\nprint(sys.modules['onlysq_mcp'].__file__)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"onlysq-mcp {__version__}" in result.stdout
    assert Path(result.stdout.splitlines()[-1]).is_relative_to(bundle)
