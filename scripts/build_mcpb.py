"""Build the Claude Desktop bundle (`.mcpb`): a manifest, the `onlysq_mcp` package and a uv project file.

The bundle is of server type `uv` (manifest 0.4, the latest the pinned `@anthropic-ai/mcpb` CLI knows):
Claude Desktop runs `uv run` in the unpacked bundle, which fetches a suitable Python and installs the
dependencies listed in the bundle's `pyproject.toml`. Bundling the dependencies instead (`python` type)
cannot work portably: pydantic-core, Pillow and others are compiled per platform and Python version
(mcpb README, "Bundling Dependencies"). The package itself is shipped as source next to
`server/main.py`, which puts it on `sys.path`, so nothing needs building (`tool.uv.package = false`).

`user_config` asks for the OnlySq key (public default), the Yandex key and folder, and the image folder;
each is passed to the server as its environment variable. An empty answer reaches the server as `""`,
which Settings reads as "not set" (settings.py), so a blank field means the server's own default.

Run from the repository root:
    python -m scripts.build_mcpb                      # dist/onlysq-mcp-<version>.mcpb, packed with npx mcpb
    python -m scripts.build_mcpb --stage-only DIR     # only write the bundle folder (the tests pack it)
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import anyio

from onlysq_mcp import __version__
from onlysq_mcp.settings import Settings
from scripts.generate import list_tools

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "onlysq_mcp"
MCPB_PACKAGE = "@anthropic-ai/mcpb"
MANIFEST_VERSION = "0.4"  # the first with `server.type = "uv"`
ENTRY_POINT = "server/main.py"

ENTRY_SCRIPT = '''\
"""Entry point of the onlysq-mcp bundle: Claude Desktop runs `uv run server/main.py` in the bundle folder."""

import sys
from pathlib import Path

# The package is shipped as source beside this folder, not installed (pyproject.toml: package = false).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from onlysq_mcp.cli import main  # noqa: E402

main()
'''

# user_config key -> (setting, type, title, sensitive, default). Descriptions are the settings' own.
USER_CONFIG: dict[str, tuple[str, str, str, bool, str]] = {
    "onlysq_api_key": ("onlysq_api_key", "string", "OnlySq API key", True, "openai"),
    "yandex_api_key": ("yandex_api_key", "string", "Yandex AI Studio API key (optional)", True, ""),
    # A folder id names a cloud folder, it grants nothing: shown as typed, as `onlysq-mcp config` prints it.
    "yandex_folder_id": ("yandex_folder_id", "string", "Yandex Cloud folder id (optional)", False, ""),
    "output_dir": ("onlysq_mcp_output_dir", "directory", "Folder for generated images (optional)", False, ""),
}
BLANK_MEANS = {
    "yandex_api_key": " Leave empty to use OnlySq only.",
    "yandex_folder_id": " Needed with the Yandex key.",
    "output_dir": " Empty: a per-user data folder.",
}


def user_config() -> dict[str, dict[str, Any]]:
    fields = Settings.model_fields
    return {
        key: {
            "type": kind,
            "title": title,
            "description": (fields[setting].description or "") + BLANK_MEANS.get(key, ""),
            "required": False,
            "sensitive": sensitive,
            "default": default,
        }
        for key, (setting, kind, title, sensitive, default) in USER_CONFIG.items()
    }


def project() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def tool_list() -> list[dict[str, str]]:
    # The first paragraph of each description, as the live server lists them.
    return [
        {"name": tool.name, "description": " ".join((tool.description or "").strip().split("\n\n")[0].split())}
        for tool in anyio.run(list_tools)
    ]


def manifest() -> dict[str, Any]:
    meta = project()
    return {
        "manifest_version": MANIFEST_VERSION,
        "name": meta["name"],
        "display_name": "OnlySq AI and Yandex AI Studio",
        "version": __version__,
        "description": meta["description"],
        "author": {"name": meta["authors"][0]["name"]},
        "homepage": meta["urls"]["Homepage"],
        "license": meta["license"],
        "keywords": meta["keywords"],
        "server": {
            "type": "uv",
            "entry_point": ENTRY_POINT,
            # As in the mcpb hello-world-uv example: uv runs the entry point inside the unpacked bundle.
            "mcp_config": {
                "command": "uv",
                "args": ["run", "--directory", "${__dirname}", ENTRY_POINT],
                "env": {setting.upper(): f"${{user_config.{key}}}" for key, (setting, *_) in USER_CONFIG.items()},
            },
        },
        "tools": tool_list(),
        "user_config": user_config(),
        "compatibility": {
            "platforms": ["darwin", "win32", "linux"],
            "runtimes": {"python": meta["requires-python"]},
        },
    }


def toml_string(text: str) -> str:
    # A TOML basic string takes the same escapes as a JSON string for this text (no control characters).
    return json.dumps(text)


def bundle_pyproject() -> str:
    meta = project()
    dependencies = "".join(f"    {toml_string(item)},\n" for item in meta["dependencies"])
    return (
        "# Generated by scripts/build_mcpb.py: the dependencies uv installs for the bundle.\n"
        "[project]\n"
        f"name = {toml_string(meta['name'] + '-bundle')}\n"
        f"version = {toml_string(__version__)}\n"
        f"requires-python = {toml_string(meta['requires-python'])}\n"
        f"dependencies = [\n{dependencies}]\n\n"
        "[tool.uv]\npackage = false\n"
    )


def stage(folder: Path) -> Path:
    """Write the bundle's files into `folder` (created, must be empty); returns the manifest's path."""
    folder.mkdir(parents=True, exist_ok=True)
    if any(folder.iterdir()):
        raise SystemExit(f"{folder} is not empty")
    shutil.copytree(PACKAGE, folder / PACKAGE.name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (folder / "server").mkdir()
    (folder / ENTRY_POINT).write_text(ENTRY_SCRIPT, encoding="utf-8")
    (folder / "pyproject.toml").write_text(bundle_pyproject(), encoding="utf-8")
    path = folder / "manifest.json"
    path.write_text(json.dumps(manifest(), indent=2) + "\n", encoding="utf-8")
    return path


def pinned_mcpb() -> str:
    """The CLI version the test suite validates with (tests/node/package.json)."""
    pins = json.loads((ROOT / "tests" / "node" / "package.json").read_text(encoding="utf-8"))["dependencies"]
    return f"{MCPB_PACKAGE}@{pins[MCPB_PACKAGE]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage-only", type=Path, metavar="DIR", help="write the bundle folder and stop")
    parser.add_argument("--out", type=Path, default=ROOT / "dist" / f"onlysq-mcp-{__version__}.mcpb")
    parser.add_argument(
        "--mcpb", default=f"npx --yes {pinned_mcpb()}", help="command that runs the mcpb CLI (default: %(default)s)"
    )
    args = parser.parse_args()
    if args.stage_only:
        print(stage(args.stage_only))
        return
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary) / "bundle"
        stage(folder)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        command = [*shlex.split(args.mcpb), "pack", str(folder), str(args.out)]
        if subprocess.run(command, check=False).returncode != 0:
            sys.exit(f"`{shlex.join(command)}` failed")
    print(args.out)


if __name__ == "__main__":
    main()
