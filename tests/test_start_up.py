"""What a person sees when the server starts: one line on stderr, a note at a terminal, typo warnings, one Ctrl-C."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import time
from pathlib import Path

import anyio
import pytest
from mcp import Client, StdioServerParameters

from onlysq_mcp import __version__
from onlysq_mcp.cli import TERMINAL_NOTE, unknown_variables
from onlysq_mcp.http_app import GRACEFUL_SHUTDOWN_SECONDS
from tests.helpers import TEST_KEY, YANDEX_KEY, server_command, start_http_server, stop_http_server, upstream_env

pytestmark = pytest.mark.anyio

PROXY_PASSWORD = "pr0xy-s3cret"


def run_stdio(params: StdioServerParameters, **env: str) -> str:
    """stderr of a stdio server whose host closes its input at once."""
    process = subprocess.run(
        server_command(),
        input=b"",
        capture_output=True,
        env={**(params.env or {}), **env},
        cwd=params.cwd,
        timeout=30,
    )
    assert process.returncode == 0, process.stderr.decode()
    assert process.stdout == b""  # stdout carries only protocol messages
    return process.stderr.decode()


def start_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(f"onlysq-mcp {__version__} over ")]


def test_stdio_start_line_names_version_transport_folder_and_providers(stdio_params, output_dir):
    stderr = run_stdio(stdio_params, ONLYSQ_MCP_PROXY=f"http://proxyuser:{PROXY_PASSWORD}@127.0.0.1:3128")
    [line] = start_lines(stderr)
    assert line == (
        f"onlysq-mcp {__version__} over stdio; images saved to {output_dir}; providers: OnlySq, Yandex; "
        "proxy http://127.0.0.1:3128"
    )
    for secret in (TEST_KEY, YANDEX_KEY, PROXY_PASSWORD, "proxyuser"):
        assert secret not in stderr
    assert TERMINAL_NOTE not in stderr  # stdin is a pipe here, as a host launches it


def test_http_start_line_names_the_url(upstream, tmp_path: Path):
    env = upstream_env(upstream.base_url, tmp_path / "images", yandex=False)
    server = start_http_server(env, tmp_path)
    try:
        deadline = time.monotonic() + 10
        while not start_lines(server.log.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop_http_server(server)
    stderr = server.log.read_text()
    [line] = start_lines(stderr)
    assert line == (
        f"onlysq-mcp {__version__} over streamable HTTP at {server.url}; images saved to {tmp_path / 'images'}; "
        "providers: OnlySq"
    )
    assert TEST_KEY not in stderr


def test_misspelt_variables_are_named_with_the_closest_setting(stdio_params, tmp_path: Path):
    assert stdio_params.cwd is not None
    (Path(stdio_params.cwd) / ".env").write_text("YANDEX_FOLDR=b1gsomething\nONLYSQ_CHAT_MODEL=gpt-4o-mini\n")
    stderr = run_stdio(stdio_params, ONLYSQ_MODLE="gpt-4o", onlysq_mcp_proxi="http://127.0.0.1:3128")
    warnings = [line for line in stderr.splitlines() if line.startswith("onlysq-mcp: warning:")]
    assert sorted(warnings) == [
        "onlysq-mcp: warning: ONLYSQ_MODLE is not a setting of onlysq-mcp and is ignored; "
        "did you mean ONLYSQ_CHAT_MODEL?",
        "onlysq-mcp: warning: YANDEX_FOLDR (in .env) is not a setting of onlysq-mcp and is ignored; "
        "did you mean YANDEX_FOLDER_ID?",
        "onlysq-mcp: warning: onlysq_mcp_proxi is not a setting of onlysq-mcp and is ignored; "
        "did you mean ONLYSQ_MCP_PROXY?",
    ]
    assert len(start_lines(stderr)) == 1  # a warning, not a refusal


def test_known_and_foreign_variables_raise_no_warning(tmp_path: Path):
    environ = {"ONLYSQ_API_KEY": "k", "yandex_folder_id": "f", "HTTPS_PROXY": "http://x:1", "PATH": "/bin"}
    assert unknown_variables(environ, tmp_path / ".env") == []
    assert unknown_variables({"YANDEX_SOMETHING_ELSE_ENTIRELY": "1"}, tmp_path / ".env") == [
        "onlysq-mcp: warning: YANDEX_SOMETHING_ELSE_ENTIRELY is not a setting of onlysq-mcp and is ignored; "
        "the README lists every setting."
    ]


def read_until(fd: int, marker: bytes, timeout: float) -> bytes:
    """What `fd` says until `marker` appears (or the time is up)."""
    seen = b""
    deadline = time.monotonic() + timeout
    while marker not in seen and (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            seen += chunk
    return seen


def test_at_a_terminal_it_says_what_it_is_and_one_ctrl_c_ends_it(stdio_params):
    main, terminal = os.openpty()
    process = subprocess.Popen(
        server_command(),
        stdin=terminal,
        stdout=terminal,
        stderr=subprocess.PIPE,
        env=stdio_params.env,
        cwd=stdio_params.cwd,
    )
    os.close(terminal)
    try:
        assert process.stderr is not None
        stderr = read_until(process.stderr.fileno(), b" over stdio;", 20)
        assert TERMINAL_NOTE.encode() in stderr
        time.sleep(0.5)  # the server reads its terminal now
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=5) == 130
        stderr += process.stderr.read()
    finally:
        process.kill()
        process.wait()
        os.close(main)
    assert b"Traceback" not in stderr and b"KeyboardInterrupt" not in stderr, stderr.decode()


async def test_http_server_ends_on_one_ctrl_c_with_a_call_in_flight(upstream, tmp_path: Path):
    upstream.add_fault("/ai/v2", "hold", delay=60)
    server = start_http_server(upstream_env(upstream.base_url, tmp_path / "images"), tmp_path)
    try:
        async with Client(server.url) as client, anyio.create_task_group() as tasks:

            async def call() -> None:
                with contextlib.suppress(Exception):  # the call is cut off by the shutdown
                    await client.call_tool("chat", {"prompt": "a slow one"})

            tasks.start_soon(call)
            while not upstream.requests_to("/ai/v2"):
                await anyio.sleep(0.05)
            server.process.send_signal(signal.SIGINT)
            started = time.monotonic()
            while server.process.poll() is None and time.monotonic() - started < GRACEFUL_SHUTDOWN_SECONDS + 5:
                await anyio.sleep(0.1)
            tasks.cancel_scope.cancel()
        assert server.process.poll() in (0, 130)
    finally:
        stop_http_server(server)
    log = server.log.read_text()
    assert "Traceback" not in log and "KeyboardInterrupt" not in log, log


def test_a_stderr_that_cannot_be_written_does_not_stop_the_server(stdio_params, tmp_path: Path):
    """A host's log file on a full disk: the start line fails to write (EFBIG), the server answers anyway."""
    import json
    import resource

    requests = [
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "t", "version": "1"},
            },
        },
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
    ]
    with (tmp_path / "host.log").open("wb") as log:
        process = subprocess.Popen(
            server_command(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            env={**(stdio_params.env or {}), "ONLYSQ_MCP_FAST_START": "false"},
            cwd=stdio_params.cwd,
            # Files may not grow past 10 bytes: the start line cannot be written (Python ignores SIGXFSZ).
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (10, 10)),
        )
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write("".join(json.dumps(r) + "\n" for r in requests).encode())
        process.stdin.flush()
        # Read both answers before closing the input: a host keeps it open while it waits.
        answers = [json.loads(process.stdout.readline() or b"null") for _ in range(2)]
        process.stdin.close()
        assert process.wait(timeout=30) == 0
    assert [a and a.get("id") for a in answers] == [1, 2], answers
    assert next(tool["name"] for tool in answers[-1]["result"]["tools"]) == "chat"
