"""Build the bundled model catalogue from the OnlySq documentation's model page.

Usage: python scripts/build_catalogue.py [PAGE] [OUT]

Reads the "Overview of OnlySq models" tables of the page (by default the copy committed next to this
script, scripts/onlysq_models_page.txt) and writes
onlysq_mcp/data/models.json in the shape of the live GET /ai/models answer:
{"api-version": ..., "models": {id: {...}}}. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PAGE = Path(__file__).resolve().parent / "onlysq_models_page.txt"
DEFAULT_OUT = ROOT / "onlysq_mcp" / "data" / "models.json"
API_VERSION = "seed-002"

# The page's section headings: rows are read only inside them. The page names no owner and no display name for
# a model (its "Model name" column is the id), so the entries carry none: nothing here is invented.
SECTIONS = frozenset(
    {
        "ChatGPT models",
        "DeepSeek models",
        "Llama models",
        "Claude models",
        "Le Chat models",
        "Qwen models",
        "Google models",
        "Cohere models",
        "Other models",
        "Image models",
        "Sound models",
    }
)
MODALITIES = {"Text": "text", "Images": "image", "Sound": "sound"}


def repair(text: str) -> str:
    """Undo UTF-8 text that was decoded as cp1252 ("GPTâ€‘4o" -> "GPT‑4o")."""

    def fix(run: re.Match[str]) -> str:
        try:
            raw = run.group().encode("cp1252")
        except UnicodeEncodeError:
            return run.group()  # not cp1252 mojibake: keep as is
        # cp1252 has no character for byte 0x9D, so a right double quote
        # (E2 80 9D) lost its last byte: restore it where it is missing.
        raw = re.sub(rb"\xe2\x80(?![\x80-\xbf])", b"\xe2\x80\x9d", raw)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return run.group()

    return re.sub(r"[^\x00-\x7f]+", fix, text)


def parse(lines: list[str]) -> dict[str, dict]:
    start = lines.index("Overview of OnlySq models")
    models: dict[str, dict] = {}
    section = last = None
    for number, line in enumerate(lines[start:], start + 1):
        line = line.rstrip()
        if line == "Pager":  # end of the page
            break
        if line in SECTIONS:
            section = line
        elif line == "OpenAI SDK" and last is not None:
            last["endpoints"].append(line)
        elif "\t" in line and not line.startswith("Model name\t"):
            cells = [cell.strip() for cell in line.split("\t")]
            if len(cells) != 5 or cells[3] not in MODALITIES or section is None:
                sys.exit(f"line {number}: cannot parse row {line!r}")
            model_id, description, kind, modality, endpoint = cells
            last = {
                "name": model_id,
                "description": repair(description),
                "modality": MODALITIES[modality],
                "tier": None,
                "status": None,
                "can-stream": None,
                "can-tools": None,
                "can-think": None,
                "cost": None,
                "owner": None,
                "type": kind,
                "endpoints": [endpoint],
            }
            models.setdefault(model_id, last)  # a duplicate keeps the first entry
        else:
            last = None
    return models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("page", nargs="?", type=Path, default=DEFAULT_PAGE)
    parser.add_argument("out", nargs="?", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    models = parse(args.page.read_text(encoding="utf-8").splitlines())
    catalogue = {"api-version": API_VERSION, "models": models}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(catalogue, indent=1, ensure_ascii=False) + "\n"
    args.out.write_text(text, encoding="utf-8", newline="\n")
    print(f"{len(models)} models -> {args.out}")


if __name__ == "__main__":
    main()
