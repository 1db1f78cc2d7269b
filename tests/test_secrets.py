"""Secrets never leave the server: not in logs, errors, tool results, or the settings' repr."""

from __future__ import annotations

import base64
import io
import json

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from PIL import Image

from tests.conftest import YANDEX_FOLDER, start_http_server, stop_http_server

pytestmark = pytest.mark.anyio

ONLYSQ_KEY = "sq-SECRET-onlysq-4f1d2c"
YANDEX_KEY = "AQVN-SECRET-yandex-9b8a7c"
HTTP_TOKEN = "SECRET-http-token-5e6f7a"
SECRETS = (ONLYSQ_KEY, YANDEX_KEY, HTTP_TOKEN)


def png_data_uri() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


async def test_no_secret_in_logs_errors_or_results(fake_upstream, tmp_path):
    fake_upstream.reset()
    fake_upstream.api_keys = {ONLYSQ_KEY}
    fake_upstream.yandex_api_keys = {YANDEX_KEY}
    env = {
        "ONLYSQ_API_KEY": ONLYSQ_KEY,
        "ONLYSQ_BASE_URL": fake_upstream.base_url,
        "YANDEX_API_KEY": YANDEX_KEY,
        "YANDEX_FOLDER_ID": YANDEX_FOLDER,
        "YANDEX_BASE_URL": fake_upstream.base_url,
        "ONLYSQ_MCP_HTTP_TOKEN": HTTP_TOKEN,
        "ONLYSQ_MCP_OUTPUT_DIR": str(tmp_path / "images"),
        "ONLYSQ_MCP_LOG_LEVEL": "DEBUG",
        "ONLYSQ_RETRIES": "1",
        "ONLYSQ_RETRY_BACKOFF": "0.01",
    }
    server = start_http_server(env, tmp_path)
    seen: list[str] = []
    try:
        http = httpx2.AsyncClient(headers={"authorization": f"Bearer {HTTP_TOKEN}"}, timeout=30)
        async with http, Client(streamable_http_client(server.url, http_client=http), mode="legacy") as client:
            calls = [
                ("chat", {"prompt": "hello"}),
                ("list_models", {}),
                ("generate_image", {"prompt": "a fox"}),
                ("generate_image", {"prompt": "a fox", "model": "aliceai-image-art-3.0"}),
                ("describe_image", {"image": png_data_uri()}),
            ]
            for tool, arguments in calls:
                result = await client.call_tool(tool, arguments)
                assert not result.is_error, result.content[0].text
                seen.append(result.model_dump_json())
            # Upstreams that echo the rejected key in their error must not have it passed on.
            fake_upstream.add_fault("/ai/v2", "status", status=401, message=f"key {ONLYSQ_KEY} is not valid")
            fake_upstream.add_fault("/v1/images/generations", "status", status=403, message=f"bad key {YANDEX_KEY}")
            fake_upstream.add_fault("/ai/v2", "status", status=503, message=f"busy for {ONLYSQ_KEY}", times=2)
            for tool, arguments in [
                ("chat", {"prompt": "again"}),
                ("generate_image", {"prompt": "a fox", "model": "aliceai-image-art-3.0"}),
                ("chat", {"prompt": "retry"}),
            ]:
                result = await client.call_tool(tool, arguments)
                assert result.is_error
                assert "***" in result.content[0].text
                seen.append(result.model_dump_json())
            resources = await client.list_resources()
            seen.append(resources.model_dump_json())
    finally:
        stop_http_server(server)
    seen.append(server.log.read_text())
    assert "DEBUG" in seen[-1]  # the log really was verbose
    for text in seen:
        for secret in SECRETS:
            assert secret not in text
    # The upstreams did receive the keys: redaction is not a failure to send them.
    assert any(r.headers.get("authorization") == f"Bearer {ONLYSQ_KEY}" for r in fake_upstream.requests)
    assert any(r.headers.get("authorization") == f"Api-Key {YANDEX_KEY}" for r in fake_upstream.requests)
    json.dumps(seen)
    fake_upstream.reset()
