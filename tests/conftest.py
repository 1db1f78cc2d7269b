"""Shared fixtures: the fake upstream, settings that point at it, and servers reached as hosts reach them."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp import StdioServerParameters

from onlysq_mcp.server import app_factory
from onlysq_mcp.settings import Settings
from tests.fake_upstream import FakeUpstream

TEST_KEY = "test-key"
YANDEX_KEY = "yandex-test-key"
YANDEX_IAM = "yandex-test-iam"
YANDEX_FOLDER = "b1gfaketestfolder"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def fake_upstream() -> Iterator[FakeUpstream]:
    fake = FakeUpstream()
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture
def upstream(fake_upstream: FakeUpstream) -> Iterator[FakeUpstream]:
    """The fake with every knob at its default and no requests recorded."""
    fake_upstream.reset()
    yield fake_upstream
    fake_upstream.reset()


def text_of(result) -> str:
    """The text blocks of a tool result, joined: what a model reads."""
    return "\n".join(block.text for block in result.content if block.type == "text")


def upstream_env(base_url: str, output_dir: Path, *, yandex: bool = True, **extra: str) -> dict[str, str]:
    env = {
        "ONLYSQ_API_KEY": TEST_KEY,
        "ONLYSQ_BASE_URL": base_url,
        "ONLYSQ_MCP_OUTPUT_DIR": str(output_dir),
        "ONLYSQ_RETRY_BACKOFF": "0.01",
        "ONLYSQ_TIMEOUT": "10",
    }
    if yandex:
        env |= {"YANDEX_API_KEY": YANDEX_KEY, "YANDEX_FOLDER_ID": YANDEX_FOLDER, "YANDEX_BASE_URL": base_url}
    return env | extra


@pytest.fixture
def output_dir(tmp_path: Path) -> Path:
    return tmp_path / "images"


@pytest.fixture
def make_settings(upstream: FakeUpstream, output_dir: Path, monkeypatch: pytest.MonkeyPatch):
    """Settings built the way a user builds them: from environment variables."""
    monkeypatch.chdir(output_dir.parent)  # no stray .env from the developer's working folder

    def make(*, yandex: bool = True, **extra: Any) -> Settings:
        for name in list(os.environ):
            if name.startswith(("ONLYSQ_", "YANDEX_")):
                monkeypatch.delenv(name)
        env = upstream_env(upstream.base_url, output_dir, yandex=yandex, **{k: str(v) for k, v in extra.items()})
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        return Settings()

    return make


@pytest.fixture
def server(make_settings):
    return app_factory(make_settings())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_command() -> list[str]:
    """The installed console script, as a host launches it."""
    script = shutil.which("onlysq-mcp", path=str(Path(sys.executable).parent)) or shutil.which("onlysq-mcp")
    assert script, "onlysq-mcp is not installed: run pip install -e '.[test]'"
    return [script]


def clean_env(**env: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("ONLYSQ_", "YANDEX_"))}
    return base | env


@pytest.fixture
def stdio_params(upstream: FakeUpstream, output_dir: Path, tmp_path: Path) -> StdioServerParameters:
    command = server_command()
    return StdioServerParameters(
        command=command[0],
        args=command[1:],
        env=clean_env(**upstream_env(upstream.base_url, output_dir)),
        cwd=str(tmp_path),
    )


class HttpServer:
    def __init__(self, process: subprocess.Popen[bytes], port: int, log: Path, host: str = "127.0.0.1") -> None:
        self.process = process
        self.port = port
        self.log = log
        self.host = host

    @property
    def url(self) -> str:
        name = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{name}:{self.port}/mcp"


def start_http_server(env: dict[str, str], tmp_path: Path, *args: str, host: str = "127.0.0.1") -> HttpServer:
    """`onlysq-mcp --transport http` on a free port of `host` (an IPv6 address without brackets)."""
    port = free_port()
    log = tmp_path / f"http-server-{port}.log"
    process = subprocess.Popen(
        [*server_command(), "--transport", "http", "--host", host, "--port", str(port), *args],
        env=clean_env(**env),
        cwd=str(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"HTTP server exited early:\n{log.read_text()}")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return HttpServer(process, port, log, host)
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"HTTP server did not start:\n{log.read_text()}")


def stop_http_server(server: HttpServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


@pytest.fixture(scope="module")
def http_server(fake_upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpServer]:
    """A real `onlysq-mcp --transport http` process (uvicorn) on a free port, shared by a module's tests."""
    folder = tmp_path_factory.mktemp("http")
    server = start_http_server(upstream_env(fake_upstream.base_url, folder / "images"), folder)
    yield server
    stop_http_server(server)
