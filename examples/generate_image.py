"""Generate an image with onlysq-mcp from a script, as any MCP client would.

    python examples/generate_image.py "a red fox in the snow, watercolour" --out pictures

It starts `onlysq-mcp` (from PATH) over stdio with this process's environment, so ONLYSQ_API_KEY and
the other settings apply; calls the `generate_image` tool; and saves every image into --out. The full
files are read through their resource links (onlysq://images/...); if a result has none, the images
inlined in it are saved instead. Prints the path of each saved file.
"""

from __future__ import annotations

import argparse
import base64
import mimetypes
import os
import sys
from pathlib import Path

import anyio
from mcp import Client, StdioServerParameters


async def generate(prompt: str, out: Path, count: int) -> list[Path]:
    server = StdioServerParameters(command="onlysq-mcp", env=dict(os.environ))
    async with Client(server) as client:
        result = await client.call_tool("generate_image", {"prompt": prompt, "count": count})
        if result.is_error:
            message = " ".join(block.text for block in result.content if block.type == "text")
            raise SystemExit(f"generate_image failed: {message}")

        out.mkdir(parents=True, exist_ok=True)
        saved = []
        links = [block for block in result.content if block.type == "resource_link"]
        if links:
            for link in links:  # the full-resolution files
                resource = await client.read_resource(link.uri)
                path = out / Path(link.name).name  # a bare file name, never a path the server chose
                path.write_bytes(base64.b64decode(resource.contents[0].blob))
                saved.append(path)
        else:
            images = [block for block in result.content if block.type == "image"]
            for number, image in enumerate(images, start=1):  # inline images
                extension = mimetypes.guess_extension(image.mime_type) or ".bin"
                path = out / f"image-{number}{extension}"
                path.write_bytes(base64.b64decode(image.data))
                saved.append(path)
        return saved


def main() -> None:
    parser = argparse.ArgumentParser(description="Generate images with the onlysq-mcp server.")
    parser.add_argument("prompt", help="what the picture should show")
    parser.add_argument("--out", type=Path, default=Path("."), help="folder to save the images in (default: .)")
    parser.add_argument("--count", type=int, default=1, help="how many images, 1-4 (default: 1)")
    args = parser.parse_args()

    saved = anyio.run(generate, args.prompt, args.out, args.count)
    if not saved:
        sys.exit("the server returned no images")
    for path in saved:
        print(path)


if __name__ == "__main__":
    main()
