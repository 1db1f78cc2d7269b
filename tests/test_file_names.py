"""Names of saved images: the prompt's words in ASCII, whatever script it is written in (issue 13, point 7)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from mcp import Client

from onlysq_mcp.images import SAFE_NAME, slug
from tests.helpers import text_of

pytestmark = pytest.mark.anyio


async def test_cyrillic_prompt_names_the_file_over_stdio(stdio_params, upstream, output_dir):
    async with Client(stdio_params) as client:
        result = await client.call_tool("generate_image", {"prompt": "Рыжая лиса в снегу"})
    assert not result.is_error, text_of(result)
    [saved] = list(output_dir.iterdir())
    assert "-ryzhaya-lisa-v-snegu-" in saved.name, saved.name
    assert SAFE_NAME.fullmatch(saved.name)
    [image] = result.structured_content["images"]
    assert image["path"] == str(saved)
    assert [r.json["prompt"] for r in upstream.requests_to("/ai/imagen")] == ["Рыжая лиса в снегу"]


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("Рыжая лиса", "ryzhaya-lisa"),
        ("Ёжик в тумане", "ezhik-v-tumane"),
        ("一只红狐狸", "yizhihonghuli"),
        ("🦊 in the snow", "fox-in-the-snow"),
        ("Fuchs über der Brücke, 4K!", "fuchs-uber-der-brucke-4k"),
        ("Лиса and a fox", "lisa-and-a-fox"),
        ("!!! ??? ...", "image"),
        ("", "image"),
    ],
)
def test_slug_is_ascii_in_any_script(prompt, expected):
    assert slug(prompt) == expected


def test_slug_is_bounded_and_safe():
    long = slug("Очень длинное описание картинки " * 1000)
    assert len(long) <= 40
    assert long == "ochen-dlinnoe-opisanie-kartinki-ochen-dl"
    assert not long.endswith("-")
    assert SAFE_NAME.fullmatch(f"20260101-120000-{long}-{'0' * 32}.png")


def test_transliteration_is_not_imported_at_start():
    # The stdio start path (cli and server) must not pay for the transliteration tables.
    code = "import sys, onlysq_mcp.cli, onlysq_mcp.server; print('anyascii' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "False"
