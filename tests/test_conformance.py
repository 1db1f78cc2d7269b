"""The official MCP conformance suite (`@modelcontextprotocol/conformance`) against the real HTTP server.

Each test runs one server scenario of the suite, as its CLI does, against a running
`onlysq-mcp --transport http` (uvicorn) and asserts the suite's verdict, read from the `checks.json` it
writes. Only scenarios that apply to this server are here: most others exercise the suite's own fixture
tools and prompts (`test_simple_text`, `test_simple_prompt`, ...). docs/conformance.md has the full table.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import clean_env
from tests.node_tools import NodeTools

LEGACY = "2025-11-25"  # initialize handshake, sessions
MODERN = "2026-07-28"  # stateless: server/discover and a _meta envelope on every request
OK = {"SUCCESS", "INFO"}
TIMEOUT = 120

SCENARIOS = [
    ("server-initialize", LEGACY),
    ("ping", LEGACY),
    ("tools-list", LEGACY),
    ("resources-list", LEGACY),
    ("prompts-list", LEGACY),
    ("dns-rebinding-protection", LEGACY),
    ("server-sse-multiple-streams", LEGACY),
    ("server-session-lifecycle", LEGACY),
    ("tools-list", MODERN),
    ("resources-list", MODERN),
    ("prompts-list", MODERN),
    ("dns-rebinding-protection", MODERN),
    ("server-sse-multiple-streams", MODERN),
    ("sep-2164-resource-not-found", MODERN),
    ("caching", MODERN),
    ("logging-set-level", LEGACY),
]


@dataclass(frozen=True)
class Verdict:
    returncode: int
    checks: list[dict[str, Any]]
    output: str

    @property
    def passed(self) -> bool:
        statuses = {check["status"] for check in self.checks}
        return self.returncode == 0 and "SUCCESS" in statuses and statuses <= OK

    def report(self) -> str:
        lines = [f"exit {self.returncode}"]
        for check in self.checks:
            line = f"{check['status']:8} {check['id']}"
            if check.get("errorMessage"):
                line += f": {check['errorMessage']}"
            lines.append(line)
        return "\n".join(lines) + "\n--- suite output\n" + self.output[-6000:]


def run_scenario(node_clients: NodeTools, url: str, scenario: str, spec: str, workdir: Path) -> Verdict:
    results = workdir / "results"
    command = node_clients.conformance_cmd(
        "server", "--url", url, "--scenario", scenario, "--spec-version", spec, "--output-dir", str(results)
    )
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=workdir,
        env=clean_env(NO_COLOR="1", FORCE_COLOR="0"),
        stdin=subprocess.DEVNULL,
    )
    checks = [check for path in sorted(results.glob("*/checks.json")) for check in json.loads(path.read_text())]
    return Verdict(done.returncode, checks, done.stdout + done.stderr)


@pytest.mark.parametrize(("scenario", "spec"), SCENARIOS, ids=lambda value: value)
def test_conformance_scenario(node_clients, http_server, scenario, spec, tmp_path):
    verdict = run_scenario(node_clients, http_server.url, scenario, spec, tmp_path)
    assert verdict.checks, f"the suite reported no checks for {scenario} at {spec}\n{verdict.report()}"
    assert verdict.passed, verdict.report()
