"""Slow generations: a job handle before the host's time limit, and nothing generated is lost."""

from __future__ import annotations

import base64
import json

import anyio
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from onlysq_mcp.server import app_factory
from tests.helpers import text_of

pytestmark = pytest.mark.anyio


async def read_json(client: Client, uri: str) -> dict:
    result = await client.read_resource(uri)
    return json.loads(result.contents[0].text)


async def wait_for_job(client: Client, uri: str, timeout: float = 10) -> dict:
    with anyio.fail_after(timeout):
        while (status := await read_json(client, uri))["status"] == "running":
            await anyio.sleep(0.1)
    return status


async def test_slow_generation_returns_a_handle_and_the_images_arrive_later(make_settings, upstream, output_dir):
    server = app_factory(make_settings(ONLYSQ_MCP_IMAGE_WAIT="0.3"))
    upstream.add_fault("/ai/imagen", "delay", delay=1.0, times=2)
    async with Client(server) as client:
        result = await client.call_tool("generate_image", {"prompt": "a slow fox", "count": 2})
        assert not result.is_error, text_of(result)
        data = result.structured_content
        assert data["images"] == []
        job = data["job"]
        assert job["status"] == "running" and job["total"] == 2
        assert job["uri"].startswith("onlysq://jobs/")
        assert "still being generated" in text_of(result) and job["uri"] in text_of(result)
        links = [b for b in result.content if b.type == "resource_link"]
        assert [str(link.uri) for link in links] == [job["uri"]]
        assert not any(b.type == "image" for b in result.content)

        status = await wait_for_job(client, job["uri"])
        assert status["status"] == "done"
        assert len(status["images"]) == 2 and status["failures"] == []
        for image in status["images"]:
            read = await client.read_resource(image["uri"])
            assert read.contents[0].mime_type == "image/png"
            on_disk = (output_dir / image["path"].rsplit("/", 1)[-1]).read_bytes()
            assert len(on_disk) == image["bytes"]
    assert len(list(output_dir.glob("*.png"))) == 2


async def test_fast_generation_is_not_affected_by_the_wait(make_settings, upstream):
    server = app_factory(make_settings(ONLYSQ_MCP_IMAGE_WAIT="5"))
    async with Client(server) as client:
        result = await client.call_tool("generate_image", {"prompt": "quick"})
    assert result.structured_content["job"] is None
    assert len(result.structured_content["images"]) == 1


async def test_failed_background_job_reports_why(make_settings, upstream):
    server = app_factory(make_settings(ONLYSQ_MCP_IMAGE_WAIT="0.2", ONLYSQ_RETRIES="0"))
    async with Client(server) as client:
        await client.call_tool("list_models", {})  # the catalogue is cached before the upstream slows down
        upstream.latency = 0.6
        upstream.add_fault("/ai/imagen", "status", status=400, message="prompt refused by the filter")
        result = await client.call_tool("generate_image", {"prompt": "x"})
        assert result.structured_content["job"]["status"] == "running"
        status = await wait_for_job(client, result.structured_content["job"]["uri"])
    assert status["status"] == "failed"
    assert status["images"] == []
    assert "prompt refused by the filter" in status["failures"][0]


async def test_unknown_job_is_a_clear_resource_error(server, upstream):
    async with Client(server) as client:
        with pytest.raises(MCPError, match="no image job"):
            await client.read_resource("onlysq://jobs/0123456789abcdef")


async def test_cancelled_call_cancels_its_generation(make_settings, upstream, output_dir):
    server = app_factory(make_settings(ONLYSQ_MCP_IMAGE_WAIT="30"))
    async with Client(server, mode="legacy") as client:
        await client.call_tool("list_models", {})
        upstream.add_fault("/ai/imagen", "delay", delay=3)
        with anyio.move_on_after(0.3):
            await client.call_tool("generate_image", {"prompt": "never mind"})
        await anyio.sleep(0.5)
        assert upstream.in_flight == 0
    assert upstream.disconnects == 1
    assert not output_dir.exists() or not list(output_dir.glob("*.png"))


async def test_job_handle_over_stdio(stdio_params, upstream):
    stdio_params.env["ONLYSQ_MCP_IMAGE_WAIT"] = "0.3"
    upstream.add_fault("/ai/imagen", "delay", delay=1.0)
    async with Client(stdio_params) as client:
        result = await client.call_tool("generate_image", {"prompt": "over stdio"})
        job = result.structured_content["job"]
        status = await wait_for_job(client, job["uri"])
        assert status["status"] == "done"
        image = await client.read_resource(status["images"][0]["uri"])
        assert image.contents[0].mime_type == "image/png"


async def test_images_of_an_earlier_run_stay_readable(make_settings, upstream, output_dir):
    upstream.imagen_format = "JPEG"
    async with Client(app_factory(make_settings())) as client:
        result = await client.call_tool("generate_image", {"prompt": "kept across restarts"})
    [image] = result.structured_content["images"]
    async with Client(app_factory(make_settings())) as restarted:
        listed = {str(r.uri) for r in (await restarted.list_resources()).resources}
        assert image["uri"] not in listed  # only this run's images are listed...
        read = await restarted.read_resource(image["uri"])  # ...but older ones can still be read
        assert read.contents[0].mime_type == "image/jpeg"
        assert base64.b64decode(read.contents[0].blob) == (output_dir / image["path"].rsplit("/", 1)[-1]).read_bytes()
        for bad in ("onlysq://images/nope.png", "onlysq://images/..%2F..%2Fetc%2Fpasswd"):
            with pytest.raises(MCPError):
                await restarted.read_resource(bad)


async def test_slow_generation_is_noted_in_the_client_log(make_settings, upstream, monkeypatch):
    from onlysq_mcp import image_tools

    monkeypatch.setattr(image_tools, "SLOW_SECONDS", 0.2)
    notes = []

    async def on_log(params) -> None:
        notes.append(params)

    upstream.add_fault("/ai/imagen", "delay", delay=0.6)
    async with Client(app_factory(make_settings()), mode="legacy", logging_callback=on_log) as client:
        result = await client.call_tool("generate_image", {"prompt": "slowly"})
    assert not result.is_error
    slow = [n for n in notes if "upstream is slow" in str(n.data)]
    assert len(slow) == 1 and slow[0].level == "notice"
