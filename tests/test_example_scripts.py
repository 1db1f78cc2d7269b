"""The Python scripts in examples/ run as a user runs them, against the fake upstream: each starts
`onlysq-mcp` from PATH over stdio, configured by the environment it inherits."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import clean_env, server_command, upstream_env

EXAMPLES = Path(__file__).parent.parent / "examples"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_example(name: str, args: list[str], upstream, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    bin_dir = str(Path(server_command()[0]).parent)  # where `onlysq-mcp` is installed
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        env=clean_env(
            **upstream_env(upstream.base_url, tmp_path / "server-images"),
            PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            ONLYSQ_MCP_LOG_LEVEL="WARNING",
            **env,
        ),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_generate_image_script_saves_pngs(upstream, tmp_path):
    out = tmp_path / "pictures"
    done = run_example(
        "generate_image.py", ["a red fox in the snow", "--out", str(out), "--count", "2"], upstream, tmp_path
    )
    assert done.returncode == 0, done.stderr
    printed = [Path(line) for line in done.stdout.splitlines()]
    assert len(printed) == 2
    for path in printed:
        assert path.parent == out
        assert path.suffix == ".png"
        assert path.read_bytes().startswith(PNG_MAGIC)
    assert sorted(out.iterdir()) == sorted(printed)
    # The very files the server saved, under the names it gave them.
    assert sorted(p.name for p in printed) == sorted(p.name for p in (tmp_path / "server-images").iterdir())
    assert [r.json["prompt"] for r in upstream.requests_to("/ai/imagen")] == ["a red fox in the snow"] * 2


def test_generate_image_script_waits_for_a_pending_job(upstream, tmp_path):
    # The server returns a job handle after 0.3 s; the images arrive 1.5 s later.
    upstream.add_fault("/ai/imagen", "delay", delay=1.5)
    out = tmp_path / "pictures"
    done = run_example(
        "generate_image.py",
        ["a slow fox", "--out", str(out), "--count", "2"],
        upstream,
        tmp_path,
        ONLYSQ_MCP_IMAGE_WAIT="0.3",
    )
    assert done.returncode == 0, done.stderr
    assert "generating…" in done.stderr  # it did get the job, and waited on it
    printed = [Path(line) for line in done.stdout.splitlines()]
    assert len(printed) == 2
    assert all(path.read_bytes().startswith(PNG_MAGIC) for path in printed)
    assert sorted(out.iterdir()) == sorted(printed)


def test_generate_image_script_gives_up_after_wait(upstream, tmp_path):
    upstream.add_fault("/ai/imagen", "delay", delay=5)
    done = run_example(
        "generate_image.py",
        ["a fox", "--out", "pictures", "--wait", "1"],
        upstream,
        tmp_path,
        ONLYSQ_MCP_IMAGE_WAIT="0.3",
    )
    assert done.returncode == 1
    assert "not ready after 1s" in done.stderr
    assert "Traceback" not in done.stderr


# The tests above that run each script; a new script in examples/ needs one.
RUNS = {"generate_image.py": test_generate_image_script_saves_pngs}


def test_every_python_example_is_run_by_a_test():
    scripts = {path.name for path in EXAMPLES.glob("*.py")}
    assert scripts == set(RUNS), f"add a test that runs {sorted(scripts - set(RUNS))} to RUNS"
