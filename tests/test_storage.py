"""Storage on an S3-compatible bucket (moto's standalone server), its settings, and the per-user limit."""

from __future__ import annotations

import hashlib
import re

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from pydantic import ValidationError

from onlysq_mcp.images import ImageStore
from onlysq_mcp.server import app_factory
from onlysq_mcp.storage import BucketStorage, StoredObjectTooLarge
from tests.fake_upstream import CHAT_PATH
from tests.helpers import make_image, start_http_server, stop_http_server, text_of, upstream_env
from tests.s3_server import SECRET_ACCESS_KEY, get_object, list_keys, s3_env

pytestmark = pytest.mark.anyio

IMAGEN_PATH = "/ai/imagen"


@pytest.fixture
def bucket_env(s3_bucket, monkeypatch) -> dict[str, str]:
    endpoint, bucket = s3_bucket
    env = s3_env(endpoint, bucket, "runs/1")
    # obstore reads the AWS_* variables from the environment itself, as a deployment sets them.
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


async def test_a_bucket_keeps_images_and_links_fetch_them_without_credentials(make_settings, upstream, bucket_env):
    endpoint, bucket = bucket_env["ONLYSQ_MCP_S3_ENDPOINT_URL"], bucket_env["ONLYSQ_MCP_STORAGE_URL"][5:].split("/")[0]
    server = app_factory(make_settings(**bucket_env, ONLYSQ_MCP_S3_PRESIGN_SECONDS="600"))
    async with Client(server) as client:
        result = await client.call_tool("generate_image", {"prompt": "to the bucket"})
        assert not result.is_error, text_of(result)
        image = result.structured_content["images"][0]
        read = await client.read_resource(image["uri"])
    (key,) = [key for key in list_keys(endpoint, bucket, "runs/1/") if "/.jobs/" not in key]
    stored = get_object(endpoint, bucket, key)
    assert image["path"] == f"s3://{bucket}/{key}" and read.contents[0].mime_type == "image/png"
    assert image["url"].startswith(f"{endpoint}/{bucket}/{key}?") and "X-Amz-Signature=" in image["url"]
    async with httpx2.AsyncClient() as http:
        fetched = await http.get(image["url"])
    assert fetched.status_code == 200 and fetched.content == stored
    assert SECRET_ACCESS_KEY not in str(result.structured_content) + text_of(result)


async def test_an_unreachable_bucket_fails_the_call_before_the_upstream_is_paid(make_settings, upstream, bucket_env):
    env = bucket_env | {"ONLYSQ_MCP_STORAGE_URL": "s3://no-such-bucket-here/x"}
    async with Client(app_factory(make_settings(**env))) as client:
        result = await client.call_tool("generate_image", {"prompt": "nowhere to keep it"})
    assert result.is_error
    assert re.search(r"cannot reach s3://no-such-bucket-here/x .*check ONLYSQ_MCP_STORAGE_URL", text_of(result))
    assert upstream.requests_to(IMAGEN_PATH) == []


async def test_a_bucket_object_over_the_limit_is_refused_before_it_is_read(bucket_env):
    storage = BucketStorage(
        bucket_env["ONLYSQ_MCP_STORAGE_URL"], endpoint=bucket_env["ONLYSQ_MCP_S3_ENDPOINT_URL"], presign_seconds=0
    )
    store = ImageStore(storage, max_bytes=1024)
    big = await store.save(make_image("PNG", (200, 200), noise=True), "image/png", "big", "")
    with pytest.raises(StoredObjectTooLarge):
        await storage.get(big.key, 1024)
    with pytest.raises(FileNotFoundError):
        await store.open(big.name.replace(big.name[-8:-4], "0000"), "")
    assert await storage.link(big.key) is None


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ONLYSQ_MCP_STORAGE_URL": "s3://Bad_Bucket/x"}, "valid bucket name"),
        ({"ONLYSQ_MCP_S3_ENDPOINT_URL": "http://storage.example.com"}, "plain http only on loopback"),
        ({"ONLYSQ_MCP_S3_ENDPOINT_URL": "https://key:secret@storage.example.com"}, "takes no user or password"),
        ({"ONLYSQ_MCP_S3_PRESIGN_SECONDS": "604801"}, "604800"),
    ],
)
def test_storage_settings_are_checked(make_settings, env, message):
    with pytest.raises(ValidationError, match=re.escape(message)):
        make_settings(**env)


def test_storage_defaults_to_the_output_folder_and_the_bucket_secret_is_masked(make_settings, monkeypatch, tmp_path):
    settings = make_settings(ONLYSQ_MCP_STORAGE_URL="", ONLYSQ_MCP_OUTPUT_DIR=str(tmp_path / "out"))
    assert settings.storage_url == str(tmp_path / "out")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret-value-123")
    assert "aws-secret-value-123" in make_settings().secrets()


async def test_one_user_at_the_limit_waits_while_another_is_served(fake_upstream, upstream, tmp_path):
    alice, bob = "alice-limit-token-0123456789", "bob-limit-token-9876543210"
    tokens = tmp_path / "tokens"
    tokens.write_text(f"alice:{alice}\nbob:sha256:{hashlib.sha256(bob.encode()).hexdigest()}\n")
    env = upstream_env(
        fake_upstream.base_url,
        tmp_path / "images",
        ONLYSQ_MCP_HTTP_TOKENS_FILE=str(tokens),
        ONLYSQ_MCP_MAX_CONCURRENCY_PER_USER="1",
    )
    server = start_http_server(env, tmp_path)
    answers: dict[str, str] = {}

    async def chat(token: str, prompt: str) -> None:
        http = httpx2.AsyncClient(headers={"authorization": f"Bearer {token}"}, timeout=30)
        async with http, Client(streamable_http_client(server.url, http_client=http)) as client:
            answers[prompt] = text_of(await client.call_tool("chat", {"prompt": prompt}))

    try:
        upstream.add_fault(CHAT_PATH, "hold", times=1)
        async with anyio.create_task_group() as group:
            group.start_soon(chat, alice, "alice one")
            group.start_soon(chat, alice, "alice two")
            with anyio.fail_after(10):
                while len(upstream.requests_to(CHAT_PATH)) < 1:
                    await anyio.sleep(0.05)
            # Alice's second call waits for her first; Bob's goes through while both of hers are open.
            await chat(bob, "bob")
            assert answers == {"bob": "Echo: bob"}
            assert len(upstream.requests_to(CHAT_PATH)) == 2
            upstream.release()
    finally:
        stop_http_server(server)
    assert answers == {"bob": "Echo: bob", "alice one": "Echo: alice one", "alice two": "Echo: alice two"}


async def test_readiness_follows_the_bucket(make_settings, upstream, bucket_env):
    from onlysq_mcp.health import Readiness

    assert await Readiness(make_settings(**bucket_env)).ready()
    missing = bucket_env | {"ONLYSQ_MCP_STORAGE_URL": "s3://no-such-bucket-here/x"}
    assert not await Readiness(make_settings(**missing)).ready()


async def test_no_link_is_given_that_would_carry_a_masked_secret(make_settings, upstream, bucket_env, monkeypatch):
    # Temporary credentials: presigned URLs carry the session token (X-Amz-Security-Token).
    monkeypatch.setenv("AWS_SESSION_TOKEN", "temporary-session-token-0123456789")
    server = app_factory(make_settings(**bucket_env, ONLYSQ_MCP_S3_PRESIGN_SECONDS="600"))
    async with Client(server) as client:
        result = await client.call_tool("generate_image", {"prompt": "temporary"})
    assert not result.is_error, text_of(result)
    assert result.structured_content["images"][0]["url"] is None
    assert "temporary-session-token" not in str(result.structured_content) + text_of(result)
