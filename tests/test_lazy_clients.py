"""The upstream HTTP client is built once, in the background after start, and closed when the server stops.

Building an `httpx2.AsyncClient` loads the CA bundle into an SSL context: on the start path it delayed the
answer to `tools/list` (docs/benchmarks.md, cold start), on the first call's path it delayed that call.
"""

from __future__ import annotations

import time

import anyio
import httpx2
import pytest
from mcp import Client

from tests.helpers import text_of

pytestmark = pytest.mark.anyio


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[httpx2.AsyncClient]:
    """Every `httpx2.AsyncClient` constructed while the test runs."""
    clients: list[httpx2.AsyncClient] = []

    class Recorded(httpx2.AsyncClient):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            clients.append(self)

    monkeypatch.setattr(httpx2, "AsyncClient", Recorded)
    return clients


async def test_client_is_built_once_in_the_background_and_closed_at_shutdown(server, upstream, built):
    replies: list[str] = []

    async def chat(client: Client, prompt: str) -> None:
        result = await client.call_tool("chat", {"prompt": prompt})
        assert not result.is_error, text_of(result)
        replies.append(text_of(result))

    async with Client(server) as client:
        await client.list_tools()
        # No tool call yet: the background task builds the client and fetches the catalogue with it.
        with anyio.fail_after(10):
            while not upstream.requests_to("/ai/models"):
                await anyio.sleep(0.01)
        assert len(built) == 1
        async with anyio.create_task_group() as calls:
            for n in range(5):
                calls.start_soon(chat, client, f"hello {n}")
        assert sorted(replies) == [f"Echo: hello {n}" for n in range(5)]
        # The upstream client, shared by the background task and the five calls; no call fetched an image URL.
        assert len(built) == 1
        assert not built[0].is_closed
    assert built[0].is_closed


async def test_a_call_during_the_background_build_waits_for_it(server, upstream, built, monkeypatch):
    """A second build would cost the first call what the background build is there to save."""
    started = anyio.Event()
    build = httpx2.AsyncClient

    def slow_build(*args, **kwargs):
        anyio.from_thread.run_sync(started.set)
        time.sleep(0.3)  # in the worker thread, like loading the CA bundle
        return build(*args, **kwargs)

    monkeypatch.setattr(httpx2, "AsyncClient", slow_build)
    async with Client(server) as client:
        await started.wait()
        result = await client.call_tool("chat", {"prompt": "during the build"})
    assert text_of(result) == "Echo: during the build"
    assert len(built) == 1
