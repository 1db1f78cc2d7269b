"""The README cannot drift: its reference is generated from the live server, its commands are CI's."""

from __future__ import annotations

import re
from pathlib import Path

from onlysq_mcp.server import app_factory
from scripts import generate

ROOT = Path(__file__).resolve().parent.parent
TEST_COMMAND = ".venv/bin/python -m pip install -e '.[test]' && .venv/bin/python -m pytest"


def test_readme_reference_is_current():
    changes = generate.diff(generate.README)
    assert not changes, f"README.md is stale: run `python scripts/generate.py` and commit the result.\n{changes}"


def test_a_new_tool_is_documented_after_the_others(monkeypatch):
    def echo(text: str) -> str:
        """Say `text` back."""
        return text

    def with_echo(settings):
        server = app_factory(settings)
        server.add_tool(echo, title="Echo")
        return server

    monkeypatch.setattr(generate, "app_factory", with_echo)
    readme = generate.readme((ROOT / "README.md").read_text(encoding="utf-8"))
    documented = re.findall(r"^### `(\w+)` — ", readme, re.M)
    assert len(documented) == 5 and documented[-1] == "echo"
    echo_section = readme[readme.index("### `echo` — Echo") :]
    assert "| `text` | string | required |" in echo_section
    assert "Read-only: no; reaches the internet: yes." in echo_section  # the spec's defaults for unset hints


def test_readme_quick_start_installs_into_a_venv_and_prints_the_host_entry():
    """The first screen gives exactly two commands: install into a venv (pip on a system Python fails under
    PEP 668) and print the host entry; install the test tools and run the tests, as CI runs them."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    first_block = re.search(r"```bash\n(.*?)```", readme, re.S).group(1)
    commands = [line for line in first_block.splitlines() if line.strip() and not line.startswith("#")]
    assert len(commands) == 2, commands
    install, test = commands
    assert install.startswith("python3 -m venv .venv && .venv/bin/python -m pip install . && ")
    assert install.split(" && ")[-1].startswith(".venv/bin/onlysq-mcp config ")
    assert test == TEST_COMMAND
    assert readme.index(first_block) < len("\n".join(readme.splitlines()[:40]))  # on the first screen
    assert TEST_COMMAND in (ROOT / ".ci" / "run").read_text(encoding="utf-8")


def test_readme_documents_every_setting():
    from onlysq_mcp.settings import Settings

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for name in Settings.model_fields:
        assert f"`{name.upper()}`" in readme
