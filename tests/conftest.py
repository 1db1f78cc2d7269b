"""Shared fixtures: the fake upstream, settings that point at it, and servers reached as hosts reach them.

Plain helpers are in tests/helpers.py; test modules import those, and take these fixtures by name.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp import StdioServerParameters

from onlysq_mcp.server import app_factory
from onlysq_mcp.settings import Settings
from tests import node_tools
from tests.fake_upstream import FakeUpstream
from tests.helpers import (
    HttpServer,
    clean_env,
    image_web_server,
    server_command,
    start_http_server,
    stop_http_server,
    upstream_env,
)
from tests.s3_server import create_bucket, moto_server, unique_bucket_name


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


@pytest.fixture
def stdio_params(upstream: FakeUpstream, output_dir: Path, tmp_path: Path) -> StdioServerParameters:
    command = server_command()
    return StdioServerParameters(
        command=command[0],
        args=command[1:],
        env=clean_env(**upstream_env(upstream.base_url, output_dir)),
        cwd=str(tmp_path),
    )


@pytest.fixture
def streamed_stdio_params(stdio_params: StdioServerParameters) -> StdioServerParameters:
    """`stdio_params` with ONLYSQ_STREAM=true, for tests of a streamed answer's own faults: by default only a
    caller who asks for progress gets a stream."""
    return stdio_params.model_copy(update={"env": {**(stdio_params.env or {}), "ONLYSQ_STREAM": "true"}})


@pytest.fixture
def streamed_server(make_settings):
    """The in-process `server` with ONLYSQ_STREAM=true (see `streamed_stdio_params`)."""
    return app_factory(make_settings(ONLYSQ_STREAM="true"))


@pytest.fixture(scope="module")
def http_server(fake_upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpServer]:
    """A real `onlysq-mcp --transport http` process (uvicorn) on a free port, shared by a module's tests."""
    folder = tmp_path_factory.mktemp("http")
    server = start_http_server(upstream_env(fake_upstream.base_url, folder / "images"), folder)
    yield server
    stop_http_server(server)


@pytest.fixture(scope="module")
def web() -> Iterator[str]:
    """A tiny web server on 127.0.0.1 serving test images; yields its base URL.

    Loopback, so the tests that fetch from it allow private URLs (ONLYSQ_MCP_ALLOW_PRIVATE_URLS).
    """
    with image_web_server() as url:
        yield url


@pytest.fixture(scope="session")
def node_clients() -> node_tools.NodeTools:
    """The pinned Node.js MCP clients (Inspector, conformance suite), installed on first use."""
    return node_tools.prepare()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's S3 server on a free port of 127.0.0.1 (a subprocess, ~1 s to start), shared by the session; yields
    its endpoint URL. Its log is moto.log in a session temp folder."""
    with moto_server(tmp_path_factory.mktemp("s3") / "moto.log") as endpoint:
        yield endpoint


@pytest.fixture
def s3_bucket(s3_server: str) -> tuple[str, str]:
    """A fresh, empty bucket of its own on `s3_server`: (endpoint URL, bucket name)."""
    bucket = unique_bucket_name()
    create_bucket(s3_server, bucket)
    return s3_server, bucket
