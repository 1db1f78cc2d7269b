"""`server.json`, the server's entry in the official MCP Registry, stays valid and in step with the code.

It must validate against the registry's schema (a copy in tests/schemas), carry the name the README
declares for PyPI ownership (`<!-- mcp-name: ... -->`), the package's version, and one environment
variable per setting of `onlysq_mcp.settings.Settings`, described as the setting describes itself.

After adding or changing a setting, `python -m tests.test_registry` rewrites the environment variables
of server.json from Settings (keeping extra keys such as `choices` or `placeholder`).
"""

from __future__ import annotations

import json
import re
import sys
import tomllib
import typing
from enum import Enum
from pathlib import Path
from typing import Any

from jsonschema import Draft7Validator
from pydantic import SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from onlysq_mcp import __version__
from onlysq_mcp.settings import Settings

ROOT = Path(__file__).parent.parent
SERVER_JSON = ROOT / "server.json"
SCHEMA = Path(__file__).parent / "schemas" / "server.schema.json"
NAME = "io.github.onlysq-mcp/onlysq-mcp"
# Secrets by name (also any SecretStr setting): hosts hide and store these values as secrets.
SECRETS = {"ONLYSQ_API_KEY", "YANDEX_API_KEY", "YANDEX_IAM_TOKEN", "ONLYSQ_MCP_HTTP_TOKEN"}


def load() -> dict[str, Any]:
    return json.loads(SERVER_JSON.read_text(encoding="utf-8"))


def package(doc: dict[str, Any]) -> dict[str, Any]:
    (pypi,) = [p for p in doc["packages"] if p["registryType"] == "pypi"]
    return pypi


def types_of(field: FieldInfo) -> tuple[Any, ...]:
    return typing.get_args(field.annotation) or (field.annotation,)


def env_value(value: Any) -> str:
    """A default as a user would write it in the environment."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, Enum):
        return value.value
    return str(value)


def expected_env_var(name: str, field: FieldInfo) -> dict[str, Any]:
    """What server.json must say about one setting."""
    types = types_of(field)
    entry: dict[str, Any] = {"name": name.upper(), "description": field.description}
    if bool in types:
        entry["format"] = "boolean"
    elif int in types or float in types:
        entry["format"] = "number"
    enums = [t for t in types if isinstance(t, type) and issubclass(t, Enum)]
    if enums:
        entry["choices"] = [member.value for member in enums[0]]
    # A plain default only: not None, not computed (the output folder depends on the user's platform).
    if field.default not in (None, PydanticUndefined) and field.default_factory is None:
        entry["default"] = env_value(field.default)
    entry["isRequired"] = False
    entry["isSecret"] = name.upper() in SECRETS or SecretStr in types
    return entry


def expected_env_vars() -> dict[str, dict[str, Any]]:
    return {name.upper(): expected_env_var(name, field) for name, field in Settings.model_fields.items()}


def test_valid_against_the_registry_schema():
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    Draft7Validator.check_schema(schema)
    doc = load()
    validator = Draft7Validator(schema, format_checker=Draft7Validator.FORMAT_CHECKER)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]
    assert not errors, "\n".join(errors)
    assert doc["$schema"] == schema["$id"]


def test_name_matches_the_readme_marker():
    doc = load()
    assert doc["name"] == NAME
    markers = re.findall(r"<!--\s*mcp-name:\s*(\S+)\s*-->", (ROOT / "README.md").read_text(encoding="utf-8"))
    assert markers == [doc["name"]], (
        "README.md must carry exactly one <!-- mcp-name: ... --> equal to server.json's name"
    )


def test_description_and_versions():
    doc = load()
    assert 0 < len(doc["description"]) <= 100
    assert doc["version"] == __version__
    assert package(doc)["version"] == __version__


def test_package_is_the_pypi_project_over_stdio():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    pypi = package(load())
    assert pypi["identifier"] == project["name"] == "onlysq-mcp"
    assert pypi["transport"] == {"type": "stdio"}
    assert "onlysq-mcp" in project["scripts"]


def test_environment_variables_are_exactly_the_settings():
    declared = [env["name"] for env in package(load()).get("environmentVariables", [])]
    expected = expected_env_vars()
    assert len(declared) == len(set(declared)), "an environment variable is listed twice in server.json"
    missing = [expected[name] for name in expected if name not in declared]
    extra = sorted(set(declared) - set(expected))
    assert not missing and not extra, (
        "server.json must list every setting of Settings, and nothing else (python -m tests.test_registry "
        f"rewrites them).\nmissing: {json.dumps(missing, indent=2)}\nnot a setting: {extra}"
    )


def test_environment_variables_describe_the_settings():
    expected = expected_env_vars()
    for env in package(load()).get("environmentVariables", []):
        want = expected.get(env["name"])
        if want is None:
            continue  # reported by the test above
        # `choices` may also be given where Settings cannot tell them (e.g. the log level's validator).
        keys = ["description", "format", "default", "isRequired", "isSecret"] + (
            ["choices"] if "choices" in want else []
        )
        for key in keys:
            assert env.get(key) == want.get(key), (
                f"{env['name']}.{key}: server.json has {env.get(key)!r}, expected {want.get(key)!r}"
            )


def test_secrets_are_marked_secret():
    by_name = {env["name"]: env for env in package(load())["environmentVariables"]}
    for name in ("ONLYSQ_API_KEY", "YANDEX_API_KEY", "YANDEX_IAM_TOKEN"):
        assert by_name[name]["isSecret"] is True
    assert by_name["ONLYSQ_BASE_URL"]["isSecret"] is False


def rewrite() -> None:
    """Regenerate server.json's environment variables from Settings, keeping extra keys of existing entries."""
    doc = load()
    pypi = package(doc)
    old = {env["name"]: env for env in pypi.get("environmentVariables", [])}
    pypi["environmentVariables"] = [old.get(name, {}) | want for name, want in expected_env_vars().items()]
    SERVER_JSON.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {len(pypi['environmentVariables'])} environment variables to {SERVER_JSON}", file=sys.stderr)


if __name__ == "__main__":
    rewrite()
