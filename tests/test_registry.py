"""`server.json`, the server's entry in the official MCP Registry, stays valid and in step with the code.

It must validate against the registry's schema (a copy in tests/schemas), carry the name the README
declares for PyPI ownership (`<!-- mcp-name: ... -->`), the package's version, and one environment
variable per setting of `onlysq_mcp.settings.Settings` that a stdio server reads (none marked `HTTP_ONLY`),
described as the setting describes itself.

After adding or changing a setting, `python scripts/generate.py` rewrites the environment variables of
server.json from Settings (keeping extra keys such as `choices` or `placeholder`).
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

from jsonschema import Draft7Validator

from onlysq_mcp import __version__
from onlysq_mcp.settings import Settings, is_http_only
from scripts import generate

ROOT = Path(__file__).parent.parent
SERVER_JSON = ROOT / "server.json"
SCHEMA = Path(__file__).parent / "schemas" / "server.schema.json"
NAME = "io.github.onlysq-mcp/onlysq-mcp"


def load() -> dict[str, Any]:
    return json.loads(SERVER_JSON.read_text(encoding="utf-8"))


def package(doc: dict[str, Any]) -> dict[str, Any]:
    (pypi,) = [p for p in doc["packages"] if p["registryType"] == "pypi"]
    return pypi


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


def test_environment_variables_are_generated_from_the_settings():
    changes = generate.diff(generate.SERVER_JSON)
    assert not changes, f"server.json is stale: run `python scripts/generate.py` and commit the result.\n{changes}"


def test_environment_variables_are_exactly_the_settings_a_stdio_server_reads():
    declared = [env["name"] for env in package(load())["environmentVariables"]]
    assert declared == [name.upper() for name, field in Settings.model_fields.items() if not is_http_only(field)]
    assert "ONLYSQ_API_KEY" in declared and "ONLYSQ_MCP_OUTPUT_DIR" in declared
    for name in ("ONLYSQ_MCP_HTTP_TOKEN", "ONLYSQ_MCP_ALLOWED_HOSTS", "ONLYSQ_MCP_SESSION_IDLE_TIMEOUT"):
        assert name not in declared


def test_http_only_marker_matches_the_descriptions():
    """The marker the generator reads and the words a user reads in the README say the same."""
    marked = {name for name, field in Settings.model_fields.items() if is_http_only(field)}
    described = {
        name for name, field in Settings.model_fields.items() if (field.description or "").startswith("HTTP only")
    }
    assert marked == described
    assert len(marked) >= 7


def test_a_package_over_http_would_declare_the_http_settings():
    doc = load()
    package(doc)["transport"] = {"type": "streamable-http", "url": "http://127.0.0.1:8000/mcp"}
    regenerated = json.loads(generate.server_json(json.dumps(doc)))
    declared = [env["name"] for env in package(regenerated)["environmentVariables"]]
    assert declared == [name.upper() for name in Settings.model_fields]


def test_what_hosts_keep_secret_is_what_the_server_masks():
    """Each variable marked secret is a value the server scrubs from its output, and no other is."""
    envs = package(load())["environmentVariables"]
    secret = {env["name"]: f"value-of-{env['name'].lower()}" for env in envs if env["isSecret"]}
    settings = Settings(_env_file=None, yandex_folder_id="folder", **{k.lower(): v for k, v in secret.items()})
    assert sorted(settings.secrets()) == sorted(secret.values())
    assert {"ONLYSQ_API_KEY", "YANDEX_API_KEY", "YANDEX_IAM_TOKEN"} <= set(secret)
    assert "ONLYSQ_BASE_URL" not in secret and "YANDEX_FOLDER_ID" not in secret
