"""Regenerate the README's tool and settings reference from the live server, or check that it is current.

python scripts/readme_reference.py          # rewrite README.md between the markers
python scripts/readme_reference.py --check  # exit 1 if README.md is stale (the test suite runs this)
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import anyio
from mcp import Client

from onlysq_mcp.server import app_factory
from onlysq_mcp.settings import Settings

README = Path(__file__).resolve().parent.parent / "README.md"
SECRET_SETTINGS = {"onlysq_api_key", "yandex_api_key", "yandex_iam_token"}


def cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def schema_type(schema: dict) -> str:
    if "enum" in schema:
        return " \\| ".join(f"`{v}`" for v in schema["enum"])
    if "anyOf" in schema:
        return " or ".join(schema_type(s) for s in schema["anyOf"] if s.get("type") != "null")
    if schema.get("type") == "array":
        return "list"
    if "$ref" in schema:
        return "object"
    return schema.get("type", "any")


def limits(schema: dict) -> str:
    parts = []
    for key, label in (("minimum", "≥"), ("maximum", "≤"), ("minLength", "min length "), ("maxLength", "max length ")):
        for candidate in [schema, *schema.get("anyOf", [])]:
            if key in candidate:
                parts.append(f"{label}{candidate[key]:,}")
    return ", ".join(parts)


async def tools_section() -> str:
    # Defaults as a user with no configuration sees them.
    server = app_factory(Settings(_env_file=None))
    async with Client(server) as client:
        tools = (await client.list_tools()).tools
    out = []
    for tool in sorted(tools, key=lambda t: ["chat", "generate_image", "describe_image", "list_models"].index(t.name)):
        out.append(f"### `{tool.name}` — {tool.title}\n")
        out.append((tool.description or "").strip() + "\n")
        out.append("| parameter | type | default | limits | description |")
        out.append("|---|---|---|---|---|")
        required = set(tool.input_schema.get("required", []))
        for name, schema in tool.input_schema["properties"].items():
            default = "required" if name in required else f"`{schema.get('default')}`"
            out.append(
                f"| `{name}` | {schema_type(schema)} | {default} | {limits(schema)} | {cell(schema.get('description', ''))} |"
            )
        hints = tool.annotations
        out.append(
            f"\nRead-only: {'yes' if hints.read_only_hint else 'no'}; reaches the internet: "
            f"{'yes' if hints.open_world_hint else 'no'}.\n"
        )
    return "\n".join(out)


def settings_section() -> str:
    out = ["| variable | default | description |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        if name in SECRET_SETTINGS and name == "onlysq_api_key":
            default = "`openai` (public key)"
        elif name == "onlysq_mcp_output_dir":
            default = "per-user data folder (see below)"
        elif field.default is None or field.default_factory is not None:
            default = "—"  # unset, or an empty list
        else:
            value = getattr(field.default, "value", field.default)
            if hasattr(value, "get_secret_value"):
                value = value.get_secret_value()
            default = f"`{value}`"
        out.append(f"| `{name.upper()}` | {default} | {cell(field.description or '')} |")
    return "\n".join(out)


def render(readme: str, tools: str, settings: str) -> str:
    for marker, body in (("tools", tools), ("settings", settings)):
        pattern = re.compile(rf"(<!-- {marker}:start -->\n).*?(<!-- {marker}:end -->)", re.S)
        if not pattern.search(readme):
            raise SystemExit(f"README.md lacks the <!-- {marker}:start --> / <!-- {marker}:end --> markers")
        readme = pattern.sub(lambda m, body=body: m.group(1) + body.rstrip() + "\n" + m.group(2), readme)
    return readme


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="fail if README.md is not current")
    args = parser.parse_args()
    current = README.read_text(encoding="utf-8")
    fresh = render(current, anyio.run(tools_section), settings_section())
    if args.check:
        if fresh != current:
            sys.exit("README.md is stale: run `python scripts/readme_reference.py` and commit the result.")
        return
    README.write_text(fresh, encoding="utf-8")


if __name__ == "__main__":
    main()
