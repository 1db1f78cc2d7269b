"""Regenerate the files written from the code, or check that they are current.

- README.md, between its markers: the reference of every tool (as the live server lists them, in its
  order) and of every setting of `onlysq_mcp.settings.Settings`.
- server.json: one environment variable per setting that applies to its stdio package, so none marked
  `HTTP_ONLY` (keeping extra keys of existing entries, such as `choices` or `placeholder`).
- onlysq_mcp/data/fast_start.json: the live server's answers to a host's start-up requests, for every
  protocol version the SDK speaks, which `onlysq_mcp.fast_start` sends while the server loads.

Secrets are the settings typed `SecretStr`; defaults are the model's own.

python scripts/generate.py          # rewrite the three
python scripts/generate.py --check  # exit 1 if any is stale (tests/test_readme.py, test_registry.py and
                                    # test_fast_start.py check it)
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
import typing
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Any

import anyio
from mcp import Client
from mcp.types import ToolAnnotations
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS
from pydantic import SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from onlysq_mcp import fast_start
from onlysq_mcp.server import app_factory
from onlysq_mcp.settings import Settings, default_output_dir, is_http_only

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
SERVER_JSON = ROOT / "server.json"
FAST_START = ROOT / "onlysq_mcp" / "data" / "fast_start.json"
# How the README names a default computed where the server runs; a new computed default must be added here.
COMPUTED_DEFAULTS: dict[Callable[..., Any], str] = {default_output_dir: "per-user data folder (see below)"}


# --- settings ------------------------------------------------------------------------------------


def types_of(field: FieldInfo) -> tuple[Any, ...]:
    return typing.get_args(field.annotation) or (field.annotation,)


def is_secret(field: FieldInfo) -> bool:
    return SecretStr in types_of(field)


def plain_default(field: FieldInfo) -> Any:
    """The default as written in the model, or None when it is unset or computed."""
    if field.default in (None, PydanticUndefined) or field.default_factory is not None:
        return None
    value = field.default
    return value.get_secret_value() if isinstance(value, SecretStr) else value


def readme_default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        if not field.get_default(call_default_factory=True):
            return "—"  # an empty list
        if field.default_factory not in COMPUTED_DEFAULTS:
            raise SystemExit(f"add {field.default_factory.__name__} to COMPUTED_DEFAULTS in {__file__}")
        return COMPUTED_DEFAULTS[field.default_factory]
    value = plain_default(field)
    if value is None:
        return "—"
    shown = f"`{getattr(value, 'value', value)}`"
    # A secret's default is printed here for everyone to read, so it is a public one.
    return f"{shown} (public key)" if is_secret(field) else shown


def env_value(value: Any) -> str:
    """A default as a user would write it in the environment."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Enum):
        return value.value
    return str(value)


def env_var(name: str, field: FieldInfo) -> dict[str, Any]:
    """What server.json says about one setting."""
    types = types_of(field)
    entry: dict[str, Any] = {"name": name.upper(), "description": field.description}
    if bool in types:
        entry["format"] = "boolean"
    elif int in types or float in types:
        entry["format"] = "number"
    enums = [t for t in types if isinstance(t, type) and issubclass(t, Enum)]
    if enums:
        entry["choices"] = [member.value for member in enums[0]]
    # A plain default only: not computed (the output folder depends on the user's platform).
    if (value := plain_default(field)) is not None:
        entry["default"] = env_value(value)
    entry["isRequired"] = False
    entry["isSecret"] = is_secret(field)
    return entry


def settings_table() -> str:
    out = ["| variable | default | description |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        out.append(f"| `{name.upper()}` | {readme_default(field)} | {cell(field.description or '')} |")
    return "\n".join(out)


# --- tools ---------------------------------------------------------------------------------------


def cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def schema_type(schema: dict) -> str:
    if "enum" in schema:
        return " \\| ".join(f"`{v}`" for v in schema["enum"])
    # Input schemas come plain (`tools.portable_schema`): one type each, no unions, nothing to look up.
    if schema.get("type") == "array":
        return "list"
    return schema.get("type", "any")


def limits(schema: dict) -> str:
    parts = []
    for key, label in (("minimum", "≥"), ("maximum", "≤"), ("minLength", "min length "), ("maxLength", "max length ")):
        if key in schema:
            parts.append(f"{label}{schema[key]:,}")
    return ", ".join(parts)


async def list_tools() -> list[Any]:
    # Defaults as a user with no configuration sees them.
    async with Client(app_factory(Settings(_env_file=None))) as client:
        return (await client.list_tools()).tools


def tools_reference(tools: list[Any]) -> str:
    out = []
    for tool in tools:
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
        # Unset hints mean what the MCP spec says they default to: not read-only, open world.
        hints = tool.annotations or ToolAnnotations()
        out.append(
            f"\nRead-only: {'yes' if hints.read_only_hint else 'no'}; reaches the internet: "
            f"{'no' if hints.open_world_hint is False else 'yes'}.\n"
        )
    return "\n".join(out)


# --- the files -----------------------------------------------------------------------------------


def readme(current: str) -> str:
    """README.md with its generated sections replaced."""
    sections = {"tools": tools_reference(anyio.run(list_tools)), "settings": settings_table()}
    for marker, body in sections.items():
        pattern = re.compile(rf"(<!-- {marker}:start -->\n).*?(<!-- {marker}:end -->)", re.S)
        if not pattern.search(current):
            raise SystemExit(f"README.md lacks the <!-- {marker}:start --> / <!-- {marker}:end --> markers")
        current = pattern.sub(lambda m, body=body: m.group(1) + body.rstrip() + "\n" + m.group(2), current)
    return current


def server_json(current: str) -> str:
    """server.json with the environment variables of its PyPI package regenerated."""
    doc = json.loads(current)
    (pypi,) = [p for p in doc["packages"] if p["registryType"] == "pypi"]
    old = {env["name"]: env for env in pypi.get("environmentVariables", [])}
    # A host runs the package over its declared transport: settings read only by the other one do not apply.
    stdio = pypi["transport"]["type"] == "stdio"
    pypi["environmentVariables"] = [
        old.get(name.upper(), {}) | env_var(name, field)
        for name, field in Settings.model_fields.items()
        if not (stdio and is_http_only(field))
    ]
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


async def startup_answers(version: str, *, modern: bool, settings: Settings | None = None) -> dict[str, Any]:
    """The server's answer to each start-up request of `version`, by method, as it writes them over stdio.

    Built with default settings; tests pass others to prove that no answer depends on them.
    """
    server = app_factory(settings or Settings(_env_file=None))
    to_server, lines = anyio.create_memory_object_stream[str](16)
    to_host, written = anyio.create_memory_object_stream[str](16)
    answers: dict[str, Any] = {}
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(fast_start.serve_lines, server, lines, to_host.send)
        for message in fast_start.opening(version, modern=modern):
            await to_server.send(json.dumps(message) + "\n")
            while "id" in message:
                answer = json.loads(await written.receive())
                if answer.get("id") == message["id"]:
                    answers[message["method"]] = {k: v for k, v in answer.items() if k not in ("jsonrpc", "id")}
                    break
        await to_server.aclose()
    return answers


def fast_start_answers(_: str) -> str:
    """onlysq_mcp/data/fast_start.json: every version's start-up answers, and what they depend on."""
    versions = [(v, False) for v in HANDSHAKE_PROTOCOL_VERSIONS] + [(v, True) for v in MODERN_PROTOCOL_VERSIONS]
    answers = {v: anyio.run(lambda v=v, m=m: startup_answers(v, modern=m)) for v, m in versions}
    doc = {"fingerprint": fast_start.fingerprint(), "answers": answers}
    return json.dumps(doc, indent=1, ensure_ascii=False) + "\n"


GENERATORS: dict[Path, Callable[[str], str]] = {
    README: readme,
    SERVER_JSON: server_json,
    FAST_START: fast_start_answers,
}


def diff(path: Path) -> str:
    """How the committed `path` differs from what the code generates now (empty when current)."""
    committed = read(path)
    fresh = GENERATORS[path](committed)
    lines = difflib.unified_diff(committed.splitlines(True), fresh.splitlines(True), path.name, "generated")
    return "".join(lines)


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8") if path.exists() else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="fail if a generated file is not current")
    args = parser.parse_args()
    if args.check:
        if changes := "".join(diff(path) for path in GENERATORS):
            sys.exit(f"{changes}\nstale: run `python scripts/generate.py` and commit the result.")
        return
    for path, generate in GENERATORS.items():
        path.write_text(generate(read(path)), encoding="utf-8")


if __name__ == "__main__":
    main()
