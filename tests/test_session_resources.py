"""Generated images as resources through real transports: each session lists its own images, a page at a
time, and hears when its list changes; only images this server wrote are served, size-checked first."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import anyio
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp_types import ResourceListChangedNotification

from tests.helpers import start_http_server, stop_http_server, upstream_env

pytestmark = pytest.mark.anyio

MODELS_URI = "onlysq://models"


class Notes:
    """A client's message handler that counts `notifications/resources/list_changed`."""

    def __init__(self) -> None:
        self.list_changed = 0

    async def __call__(self, message: object) -> None:
        if isinstance(message, ResourceListChangedNotification):
            self.list_changed += 1

    async def wait_for(self, count: int) -> None:
        with anyio.fail_after(5):
            while self.list_changed < count:
                await anyio.sleep(0.02)


async def every_page(client: Client) -> list[list[str]]:
    """The URIs of each page of `resources/list`, following cursors to the end."""
    pages: list[list[str]] = []
    cursor = None
    while True:
        result = await client.list_resources(cursor=cursor)
        pages.append([str(r.uri) for r in result.resources])
        assert all("secret plan" not in (r.title or "") + (r.description or "") for r in result.resources)
        cursor = result.next_cursor
        if cursor is None:
            return pages
        assert len(pages) < 20


async def generate(client: Client, prompt: str, count: int = 1) -> list[str]:
    result = await client.call_tool("generate_image", {"prompt": prompt, "count": count})
    assert not result.is_error, result.content
    return [image["uri"] for image in result.structured_content["images"]]


async def test_http_sessions_list_only_their_own_images_paginated(fake_upstream, tmp_path):
    fake_upstream.reset()
    env = upstream_env(fake_upstream.base_url, tmp_path / "images", ONLYSQ_MCP_RESOURCES_PAGE_SIZE="2")
    server = start_http_server(env, tmp_path)
    first_notes, second_notes = Notes(), Notes()
    try:
        async with (
            Client(server.url, mode="legacy", message_handler=first_notes) as first,
            Client(server.url, mode="legacy", message_handler=second_notes) as second,
            Client(server.url) as stateless,
        ):
            assert first.server_capabilities.resources is not None
            assert first.server_capabilities.resources.list_changed is True
            assert await every_page(first) == [[MODELS_URI]]

            first_images = await generate(first, "a secret plan", count=3)
            await first_notes.wait_for(1)
            second_images = await generate(second, "another secret plan")
            await second_notes.wait_for(1)
            first_images += await generate(first, "one more secret plan")
            await first_notes.wait_for(2)

            first_pages = await every_page(first)
            second_pages = await every_page(second)
            # The stateless protocol (2026-07-28) has no session to list images for.
            stateless_pages = await every_page(stateless)
            with pytest.raises(MCPError, match="invalid cursor"):
                await first.list_resources(cursor="not-a-cursor")
    finally:
        stop_http_server(server)

    assert first_pages == [[MODELS_URI, *first_images[:2]], first_images[2:]]
    assert second_pages == [[MODELS_URI, *second_images]]
    assert stateless_pages == [[MODELS_URI]]
    # Each session heard of its own images only: one notification per call.
    assert (first_notes.list_changed, second_notes.list_changed) == (2, 1)
    assert all(len(uri.rsplit("-", 1)[1].split(".")[0]) == 32 for uri in first_images + second_images)


async def test_http_late_images_are_announced_to_their_session(fake_upstream, tmp_path):
    fake_upstream.reset()
    fake_upstream.add_fault("/ai/imagen", "delay", delay=1.0)
    env = upstream_env(fake_upstream.base_url, tmp_path / "images", ONLYSQ_MCP_IMAGE_WAIT="0.2")
    server = start_http_server(env, tmp_path)
    notes = Notes()
    try:
        async with Client(server.url, mode="legacy", message_handler=notes) as client:
            result = await client.call_tool("generate_image", {"prompt": "slow"})
            assert result.structured_content["job"]["status"] == "running"
            assert notes.list_changed == 0
            await notes.wait_for(1)
            [listed] = await every_page(client)
    finally:
        stop_http_server(server)
        fake_upstream.reset()
    [image] = [uri for uri in listed if uri != MODELS_URI]
    assert image.startswith("onlysq://images/") and image.endswith("-slow-" + image[-36:])


async def test_stdio_lists_the_runs_images_and_announces_them(stdio_params, upstream):
    notes = Notes()
    async with Client(stdio_params, mode="legacy", message_handler=notes) as client:
        assert client.server_capabilities.resources.list_changed is True
        images = await generate(client, "over stdio", count=2)
        await notes.wait_for(1)
        assert await every_page(client) == [[MODELS_URI, *images]]


def image_name(stem: str, ext: str = "png") -> str:
    """A name of the shape the server gives its images."""
    return f"20250101-000000-{stem}-{'ab' * 16}.{ext}"


async def test_http_serves_only_images_this_server_wrote(fake_upstream, tmp_path):
    fake_upstream.reset()
    folder = tmp_path / "images"
    env = upstream_env(fake_upstream.base_url, folder, ONLYSQ_MCP_MAX_IMAGE_BYTES="100000")
    server = start_http_server(env, tmp_path)
    try:
        async with Client(server.url, mode="legacy") as client:
            [earlier] = await generate(client, "kept")
    finally:
        stop_http_server(server)
    earlier_bytes = (folder / earlier.removeprefix("onlysq://images/")).read_bytes()

    (folder / "notes.txt").write_text("meeting notes")
    (folder / "credentials").write_text("aws_secret_access_key=hunter2")
    (folder / image_name("text")).write_text("not an image at all")
    # Sparse, so it costs no disk: read whole, it would take seconds and gigabytes.
    huge = folder / image_name("huge")
    with huge.open("wb") as handle:
        handle.write(earlier_bytes)
        handle.truncate(4_000_000_000)
    os.symlink(folder.parent / "outside.png", folder / image_name("link"))
    (folder.parent / "outside.png").write_bytes(earlier_bytes)

    server = start_http_server(env, tmp_path)  # a new run on the same folder
    try:
        async with Client(server.url, mode="legacy") as client:
            read = await client.read_resource(earlier)
            refused: dict[str, str] = {}
            for name in ["notes.txt", "credentials", image_name("text"), image_name("link"), huge.name]:
                with anyio.fail_after(5), pytest.raises(MCPError) as caught:
                    await client.read_resource("onlysq://images/" + name)
                refused[name] = caught.value.error.message
            listed = await every_page(client)
    finally:
        stop_http_server(server)

    assert base64.b64decode(read.contents[0].blob) == earlier_bytes
    assert read.contents[0].mime_type == "image/png"
    assert listed == [[MODELS_URI]]  # an earlier run's images are readable, not listed
    for name in ["notes.txt", "credentials", image_name("text"), image_name("link")]:
        assert refused[name] == f"no generated image at onlysq://images/{name}"
    # The size in the refusal is the file's own: it was measured, not read up to the cap.
    assert "4,000,000,000 bytes" in refused[huge.name] and "ONLYSQ_MCP_MAX_IMAGE_BYTES" in refused[huge.name]
    assert Path(folder / "notes.txt").read_text() == "meeting notes"


def test_a_shelf_keeps_the_newest_images_and_its_cursors_stay_valid(monkeypatch):
    from onlysq_mcp import session_images
    from onlysq_mcp.images import SavedImage

    monkeypatch.setattr(session_images, "KEEP_LISTED", 3)
    shelf = session_images.Shelf()
    names = [f"20261127-100000-n{i}-{i:032x}.png" for i in range(5)]
    saved = [SavedImage(name, name, "image/png", 8, f"/srv/{name}") for name in names]
    for image in saved[:2]:
        shelf.add(image, "onlysq/flux, 1:1")
    page, after = shelf.page(0, 1)
    assert ([r.name for r in page], after) == ([saved[0].name], 1)
    for image in saved[2:]:
        shelf.add(image, "onlysq/flux, 1:1")
    # The first two dropped out: a cursor into them continues with the oldest kept.
    page, after = shelf.page(1, 2)
    assert ([r.name for r in page], after) == ([saved[2].name, saved[3].name], 4)
    assert [r.name for r in shelf.page(4, 2)[0]] == [saved[4].name] and shelf.page(4, 2)[1] is None
    assert {r.title for r in shelf.resources} == {"Generated image"}
