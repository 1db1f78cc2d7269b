"""Two replicas behind a round-robin proxy, sharing an S3 bucket (moto's standalone server), with two users.

Everything here is a real process or server on 127.0.0.1: the replicas are `onlysq-mcp --transport http`
subprocesses, the bucket is moto's server, the proxy sends each HTTP request to the next replica in turn.
"""

from __future__ import annotations

import base64
import hashlib
import json
import signal
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from onlysq_mcp.principals import owner_prefix
from tests.helpers import HttpServer, start_http_server, stop_http_server, text_of, upstream_env
from tests.round_robin_proxy import ProxyHandle, round_robin_proxy
from tests.s3_server import get_object, list_keys, s3_env

pytestmark = pytest.mark.anyio

ALICE = "alice-replica-token-0123456789"
BOB = "bob-replica-token-9876543210"
PREFIX = "team"
IMAGEN_PATH = "/ai/imagen"


class Team:
    def __init__(self, replicas: list[HttpServer], proxy: ProxyHandle, endpoint: str, bucket: str) -> None:
        self.replicas = replicas
        self.proxy = proxy
        self.endpoint = endpoint
        self.bucket = bucket

    @property
    def url(self) -> str:
        return self.proxy.url + "/mcp"

    def keys(self, user: str) -> list[str]:
        return list_keys(self.endpoint, self.bucket, f"{PREFIX}/{owner_prefix(user)}")


def replica_env(fake_upstream, tmp_path: Path, endpoint: str, bucket: str) -> dict[str, str]:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"alice:{ALICE}\nbob:sha256:{hashlib.sha256(BOB.encode()).hexdigest()}\n")
    return upstream_env(
        fake_upstream.base_url,
        tmp_path / "unused-folder",
        **s3_env(endpoint, bucket, PREFIX),
        ONLYSQ_MCP_HTTP_TOKENS_FILE=str(tokens),
        ONLYSQ_MCP_IMAGE_WAIT="1",
        ONLYSQ_MCP_JOB_LEASE="2",
        ONLYSQ_MCP_IMAGE_DELIVERY="inline",
    )


@pytest.fixture
def team(fake_upstream, s3_bucket, tmp_path) -> Iterator[Team]:
    endpoint, bucket = s3_bucket
    env = replica_env(fake_upstream, tmp_path, endpoint, bucket)
    # Stateless: no sticky sessions, so the 2025-11-25 handshake works behind round robin too.
    replicas = [start_http_server(env, tmp_path, "--stateless") for _ in range(2)]
    try:
        with round_robin_proxy([f"http://127.0.0.1:{r.port}" for r in replicas]) as proxy:
            yield Team(replicas, proxy, endpoint, bucket)
    finally:
        for replica in replicas:
            stop_http_server(replica)
    assert not (tmp_path / "unused-folder").exists()


def as_user(url: str, token: str, mode: str = "auto") -> Client:
    http = httpx2.AsyncClient(headers={"authorization": f"Bearer {token}"}, timeout=30)
    return Client(streamable_http_client(url, http_client=http), mode=mode)  # type: ignore[arg-type]


def inline_images(result) -> list[bytes]:
    return [base64.b64decode(block.data) for block in result.content if block.type == "image"]


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_an_image_made_through_one_replica_is_read_through_the_other(team, upstream, mode):
    async with as_user(team.url, ALICE, mode) as client:
        result = await client.call_tool("generate_image", {"prompt": "a shared fox", "count": 2})
        assert not result.is_error, text_of(result)
        made = inline_images(result)
        uris = [image["uri"] for image in result.structured_content["images"]]
        # Every read goes to the next replica: each image is read through both.
        reads = [await client.read_resource(uri) for uri in uris for _ in range(2)]
    assert len({backend for backend in team.proxy.served_by}) == 2
    assert [base64.b64decode(r.contents[0].blob) for r in reads] == [made[0], made[0], made[1], made[1]]
    # Every image the upstream returned is in the bucket, exactly as returned, under the user's prefix.
    keys = team.keys("alice")
    assert len(keys) == 2
    assert sorted(get_object(team.endpoint, team.bucket, key) for key in keys) == sorted(made)
    paths = [image["path"] for image in result.structured_content["images"]]
    assert sorted(paths) == sorted(f"s3://{team.bucket}/{key}" for key in keys)


async def test_one_user_cannot_reach_another_users_images_or_jobs(team, upstream):
    async with as_user(team.url, ALICE) as alice:
        made = await alice.call_tool("generate_image", {"prompt": "alice's own"})
        uri = made.structured_content["images"][0]["uri"]
        upstream.add_fault(IMAGEN_PATH, "hold", times=1)
        pending = await alice.call_tool("generate_image", {"prompt": "alice's slow one"})
        job = pending.structured_content["job"]
        assert job["status"] == "running", text_of(pending)
    async with as_user(team.url, BOB) as bob:
        for _ in range(2):  # through both replicas
            with pytest.raises(MCPError, match="no generated image"):
                await bob.read_resource(uri)
            with pytest.raises(MCPError, match="no image job"):
                await bob.read_resource(job["uri"])
            described = await bob.call_tool("describe_image", {"image": uri})
            assert described.is_error and "no generated image" in text_of(described)
            collected = await bob.call_tool("generate_image", {"job": job["uri"]})
            assert collected.is_error and "no image generation" in text_of(collected)
    upstream.release()
    async with as_user(team.url, ALICE) as alice:
        assert (await alice.read_resource(uri)).contents[0].blob
    assert team.keys("bob") == []


async def test_a_job_started_on_one_replica_is_collected_on_the_other(team, upstream):
    first, second = (f"http://127.0.0.1:{r.port}/mcp" for r in team.replicas)
    upstream.add_fault(IMAGEN_PATH, "hold", times=2)
    async with as_user(first, ALICE) as client:
        pending = await client.call_tool("generate_image", {"prompt": "a held fox", "count": 2})
    job = pending.structured_content["job"]
    assert job["status"] == "running", text_of(pending)
    async with as_user(second, ALICE) as client:
        status = json.loads((await client.read_resource(job["uri"])).contents[0].text)
        assert status["status"] == "running" and status["id"] == job["id"]
        upstream.release()
        with anyio.fail_after(20):
            while (again := await client.call_tool("generate_image", {"job": job["uri"]})).structured_content["job"]:
                pass
    assert not again.is_error, text_of(again)
    assert len(again.structured_content["images"]) == 2 and again.structured_content["prompt"] == "a held fox"
    assert sorted(inline_images(again)) == sorted(get_object(team.endpoint, team.bucket, k) for k in team.keys("alice"))


async def test_a_job_of_a_killed_replica_is_reported_failed_never_running(
    team, upstream, fake_upstream, s3_bucket, tmp_path
):
    endpoint, bucket = s3_bucket
    doomed = start_http_server(replica_env(fake_upstream, tmp_path, endpoint, bucket), tmp_path, "--stateless")
    try:
        upstream.add_fault(IMAGEN_PATH, "delay", delay=0.2, times=1)
        upstream.add_fault(IMAGEN_PATH, "hold", times=1)
        async with as_user(f"http://127.0.0.1:{doomed.port}/mcp", ALICE) as client:
            pending = await client.call_tool("generate_image", {"prompt": "half a batch", "count": 2})
        job = pending.structured_content["job"]
        assert job["status"] == "running", text_of(pending)
        with anyio.fail_after(5):
            while not team.keys("alice"):  # the quick image is in the bucket before the replica dies
                await anyio.sleep(0.1)
        doomed.process.send_signal(signal.SIGKILL)
        doomed.process.wait()
    finally:
        stop_http_server(doomed)
        upstream.release()
    async with as_user(team.url, ALICE) as client:
        with anyio.fail_after(15):
            while (status := json.loads((await client.read_resource(job["uri"])).contents[0].text))["status"] == (
                "running"
            ):
                await anyio.sleep(0.2)
        collected = await client.call_tool("generate_image", {"job": job["uri"]})
    assert status["status"] == "done" and len(status["images"]) == 1
    assert "stopped before it finished" in status["failures"][0]
    assert not collected.is_error and len(collected.structured_content["images"]) == 1
    assert "stopped before it finished" in text_of(collected)
