"""Several images in one call: one seed per image, and one request at a time once the upstream answers 429.

Through a real transport (the server as a stdio subprocess) against the fake upstream.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import httpx2
import pytest
from mcp import Client, StdioServerParameters

from onlysq_mcp.upstream import RetryPolicy
from tests.fake_upstream import IMAGEN_PATH, QUEUE_FULL_MESSAGE
from tests.helpers import make_upstream, text_of

pytestmark = pytest.mark.anyio

BATCH = 4


def with_env(params: StdioServerParameters, **env: str) -> StdioServerParameters:
    return params.model_copy(update={"env": {**(params.env or {}), **env}})


def queue_of_one(upstream) -> None:
    """The fake refuses an image request with 429 "provider queue" while another is in flight; each takes long
    enough that concurrent requests overlap."""
    upstream.image_queue_limit = 1
    upstream.latency = 0.2


def assert_one_at_a_time_after_the_first_burst(upstream) -> None:
    arrivals = upstream.image_arrivals
    # The first BATCH went out together, before any 429 came back; every later one had the upstream to itself.
    assert max(arrivals[:BATCH]) > 1, "the fake never refused: the test did not exercise the queue"
    assert len(arrivals) > BATCH
    assert arrivals[BATCH:] == [1] * (len(arrivals) - BATCH), arrivals


async def test_a_batch_goes_one_at_a_time_after_a_429_and_delivers_every_image(stdio_params, upstream):
    queue_of_one(upstream)
    async with Client(stdio_params) as client:
        result = await client.call_tool("generate_image", {"prompt": "a queue of foxes", "count": BATCH})
    assert not result.is_error, text_of(result)
    data = result.structured_content
    assert len(data["images"]) == BATCH, text_of(result)
    assert data["failures"] == []
    assert "the images were requested one at a time" in text_of(result)
    assert_one_at_a_time_after_the_first_burst(upstream)


async def test_a_batch_returned_as_a_job_handle_paces_the_same_way(stdio_params, upstream):
    queue_of_one(upstream)
    async with Client(with_env(stdio_params, ONLYSQ_MCP_IMAGE_WAIT="0.3")) as client:
        # The wait bounds the whole call: the catalogue is fetched first so that the 0.3s go to the batch.
        await client.call_tool("list_models", {})
        result = await client.call_tool("generate_image", {"prompt": "a slow queue", "count": BATCH})
        assert not result.is_error, text_of(result)
        job = result.structured_content["job"]
        assert job is not None and job["status"] == "running", text_of(result)
        with anyio.fail_after(20):
            while (status := json.loads((await client.read_resource(job["uri"])).contents[0].text))[
                "status"
            ] == "running":
                await anyio.sleep(0.1)
    assert status["status"] == "done", status
    assert len(status["images"]) == BATCH and status["failures"] == [], status
    assert_one_at_a_time_after_the_first_burst(upstream)


async def test_the_fake_queue_refusal_reads_like_onlysq(stdio_params, upstream):
    """Without retries, the refused images fail with the provider's own words, and the call still succeeds."""
    queue_of_one(upstream)
    async with Client(with_env(stdio_params, ONLYSQ_RETRIES="0")) as client:
        result = await client.call_tool("generate_image", {"prompt": "no retries", "count": 2})
    assert not result.is_error, text_of(result)
    assert len(result.structured_content["images"]) == 1
    [failure] = result.structured_content["failures"]
    assert "HTTP 429" in failure and QUEUE_FULL_MESSAGE in failure


async def test_a_seeded_batch_sends_one_seed_per_image_wrapping_at_2_to_the_32(stdio_params, upstream):
    top = 2**32 - 1
    async with Client(stdio_params) as client:
        plain = await client.call_tool("generate_image", {"prompt": "dune", "count": 3, "seed": 41})
        wrapped = await client.call_tool("generate_image", {"prompt": "dune", "count": 3, "seed": top - 1})
    for result in (plain, wrapped):
        assert not result.is_error, text_of(result)
        assert len(result.structured_content["images"]) == 3
    seeds = [request.json["seed"] for request in upstream.requests_to(IMAGEN_PATH)]
    assert sorted(seeds[:3]) == [41, 42, 43]
    assert sorted(seeds[3:]) == [0, top - 1, top]
    assert "Seed sent: 41, 42, 43 (OnlySq may ignore it)." in text_of(plain)
    assert "one at a time" not in text_of(plain)  # no 429, no pacing
    # The fake draws from prompt and seed: different seeds, different pictures.
    assert len({Path(image["path"]).read_bytes() for image in plain.structured_content["images"]}) == 3


async def test_descriptions_promise_nothing_the_upstream_does_not(stdio_params, upstream):
    async with Client(stdio_params) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    seed = tools["generate_image"].input_schema["properties"]["seed"]["description"]
    assert "repeatable" not in seed
    chat = tools["chat"].input_schema["properties"]
    for description in (seed, chat["temperature"]["description"], chat["max_tokens"]["description"]):
        assert "passed to the provider" in description.lower(), description
        assert "may ignore it" in description or "not every provider honours it" in description, description
    assert "seed+i" in seed


class SlowPacer:
    """Keeps every attempt waiting a while, as one queued behind a call's other images does."""

    def __init__(self, wait: float) -> None:
        self.wait = wait
        self.refusals = 0

    @asynccontextmanager
    async def attempt(self) -> AsyncIterator[None]:
        await anyio.sleep(self.wait)
        yield

    def rate_limited(self) -> None:
        self.refusals += 1


async def test_waiting_behind_other_images_does_not_use_up_an_images_retry_deadline():
    answers = iter([429, 429, 200])
    upstream = make_upstream(
        lambda request: httpx2.Response(next(answers), json={"ok": True}),
        policy=RetryPolicy(retries=3, backoff=0, deadline=0.2),
        read_timeout=5,
    )
    pacer = SlowPacer(0.15)
    body = await upstream.request("POST", "/ai/imagen", json_body={}, pacer=pacer)
    assert body.status_code == 200
    assert pacer.refusals == 2
