"""Generate an image with onlysq-mcp from a script, as any MCP client would.

    python examples/generate_image.py "a red fox in the snow, watercolour" --out pictures

It starts `onlysq-mcp` (from PATH) over stdio with this process's environment, so ONLYSQ_API_KEY and
the other settings apply; calls the `generate_image` tool; and saves every image into --out. The full
files are read through their resource URIs (onlysq://images/...); if a result has none, the images
inlined in it are saved instead. A slow generation returns a job (onlysq://jobs/...) instead of images:
the script then reads the job until it is done, up to --wait seconds. Prints the path of each saved file.
"""

from __future__ import annotations

import argparse
import base64
import json
import mimetypes
import os
import sys
import time
from pathlib import Path
from typing import Any

import anyio
from mcp import Client, StdioServerParameters

POLL_SECONDS = 1.0


class Failed(Exception):
    """What went wrong, told to the user without a traceback."""


async def generate(prompt: str, out: Path, count: int, wait: float) -> list[Path]:
    server = StdioServerParameters(command="onlysq-mcp", env=dict(os.environ))
    async with Client(server) as client:
        try:
            return await save_images(client, prompt, out, count, wait)
        except Failed as failed:
            message = str(
                failed
            )  # exit once the session is closed: inside it, the exit would come wrapped in exception groups
    raise SystemExit(message)


async def save_images(client: Client, prompt: str, out: Path, count: int, wait: float) -> list[Path]:
    result = await client.call_tool("generate_image", {"prompt": prompt, "count": count})
    if result.is_error:
        message = " ".join(block.text for block in result.content if block.type == "text")
        raise Failed(f"generate_image failed: {message}")
    output = result.structured_content or {}
    images, failures = output.get("images", []), output.get("failures", [])
    if output.get("job"):  # still generating: the server keeps going, and the job lists the images
        job = await finish(client, output["job"]["uri"], wait)
        images, failures = job["images"], job["failures"]
    for failure in failures:
        print(f"an image failed: {failure}", file=sys.stderr)

    out.mkdir(parents=True, exist_ok=True)
    saved = []
    uris = [image["uri"] for image in images if image.get("uri")]
    for uri in uris:  # the full-resolution files
        resource = await client.read_resource(uri)
        path = out / Path(uri).name  # a bare file name, never a path the server chose
        path.write_bytes(base64.b64decode(resource.contents[0].blob))
        saved.append(path)
    if not uris:
        inline = [block for block in result.content if block.type == "image"]
        for number, image in enumerate(inline, start=1):
            extension = mimetypes.guess_extension(image.mime_type) or ".bin"
            path = out / f"image-{number}{extension}"
            path.write_bytes(base64.b64decode(image.data))
            saved.append(path)
    return saved


async def finish(client: Client, job_uri: str, wait: float) -> dict[str, Any]:
    """The job's status once it is no longer running, read every POLL_SECONDS for up to `wait` seconds."""
    deadline = time.monotonic() + wait
    while True:
        job = json.loads((await client.read_resource(job_uri)).contents[0].text)
        if job["status"] != "running":
            return job
        if time.monotonic() > deadline:
            raise Failed(f"the images were not ready after {wait:g}s; {len(job['images'])} of {job['total']} done")
        print(f"generating… {len(job['images'])} of {job['total']} ready", file=sys.stderr)
        await anyio.sleep(POLL_SECONDS)


def main() -> None:
    parser = argparse.ArgumentParser(description="Generate images with the onlysq-mcp server.")
    parser.add_argument("prompt", help="what the picture should show")
    parser.add_argument("--out", type=Path, default=Path("."), help="folder to save the images in (default: .)")
    parser.add_argument("--count", type=int, default=1, help="how many images, 1-4 (default: 1)")
    parser.add_argument("--wait", type=float, default=600, help="seconds to wait for a slow generation (default: 600)")
    args = parser.parse_args()

    saved = anyio.run(generate, args.prompt, args.out, args.count, args.wait)
    if not saved:
        sys.exit("the server returned no images")
    for path in saved:
        print(path)


if __name__ == "__main__":
    main()
