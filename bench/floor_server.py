"""The floor: the thinnest `MCPServer` with the project's four tool names, the reference of every benchmark.

Each tool makes one direct `httpx2` call to the upstream (`generate_image` one per image, concurrently, as
the project does) and returns the upstream's answer as text: no validation, retries, catalogue, saving,
previews or progress. Images are not returned inline (the least a server can do with them is to receive
them); the text says how much base64 arrived.

    python bench/floor_server.py              # stdio
    python bench/floor_server.py --http 8001  # streamable HTTP at http://127.0.0.1:8001/mcp

Reads ONLYSQ_BASE_URL and ONLYSQ_API_KEY like the project.
"""

from __future__ import annotations

import argparse
import asyncio
import os

import httpx2
from mcp.server.mcpserver import MCPServer

BASE_URL = os.environ.get("ONLYSQ_BASE_URL", "https://api.onlysq.ru").rstrip("/")
HEADERS = {"Authorization": f"Bearer {os.environ.get('ONLYSQ_API_KEY', 'openai')}"}

server = MCPServer(name="floor")
http = httpx2.AsyncClient(timeout=120, limits=httpx2.Limits(max_connections=None), trust_env=False)


async def ask(model: str, content: object) -> str:
    request = {"messages": [{"role": "user", "content": content}], "stream": False}
    response = await http.post(f"{BASE_URL}/ai/v2", headers=HEADERS, json={"model": model, "request": request})
    return response.text


@server.tool()
async def chat(prompt: str, model: str = "gpt-4o-mini") -> str:
    return await ask(model, prompt)


@server.tool()
async def list_models() -> str:
    return (await http.get(f"{BASE_URL}/ai/models")).text


@server.tool()
async def generate_image(
    prompt: str, model: str = "flux", aspect_ratio: str = "1:1", count: int = 1, seed: int | None = None
) -> str:
    body = {"model": model, "prompt": prompt, "ratio": aspect_ratio, "seed": seed}

    async def one() -> int:
        response = await http.post(f"{BASE_URL}/ai/imagen", headers=HEADERS, json=body)
        return len(response.json()["files"][0])

    sizes = await asyncio.gather(*(one() for _ in range(count)))
    return "\n".join(f"image {i}: {size} base64 characters" for i, size in enumerate(sizes, 1))


@server.tool()
async def describe_image(image: str, question: str = "Describe this image.", model: str = "gemini-2.5-flash") -> str:
    return await ask(model, [{"type": "text", "text": question}, {"type": "image_url", "image_url": {"url": image}}])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--http", type=int, metavar="PORT", help="serve streamable HTTP on 127.0.0.1:PORT/mcp")
    args = parser.parse_args()
    if args.http:
        server.run("streamable-http", port=args.http)
    else:
        server.run("stdio")
