"""`onlysq-mcp config <host>`: the entry that launches this installation from an MCP host, printed or merged.

The entry launches `<this interpreter> -m onlysq_mcp`, by absolute path: hosts start servers without the
user's shell PATH (the `spawn uvx ENOENT` of Claude Desktop), and the interpreter of a venv keeps that venv
even when nothing activates it. `sys.executable` is taken as is, not resolved: resolving a venv's `python`
symlink would land on the base interpreter, which does not have the package.

Its `env` holds every setting that is set now (environment or `.env` of the working folder), so the host
starts the server as configured here, whatever its own working folder. Secrets become placeholders unless
asked for: a config file is often synced or shared, and a printed entry ends up in terminal scrollback.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .settings import Settings

HOSTS = ("claude-desktop", "claude-code", "cursor", "vscode")
DEFAULT_NAME = "onlysq"
# ~/.claude.json also holds Claude Code's per-project state and grows to megabytes; far larger is not a config.
MAX_CONFIG_BYTES = 64 * 1024 * 1024


class HostConfigError(Exception):
    """The host's config file cannot be updated; the message says why and what to do."""


def app_data(platform: str, environ: Mapping[str, str], home: Path) -> Path:
    """Electron's `app.getPath("appData")`, where Claude Desktop and VS Code keep their settings.

    Source: Electron docs, app.getPath: `%APPDATA%` on Windows, `~/Library/Application Support` on macOS,
    `$XDG_CONFIG_HOME` or `~/.config` on Linux.
    """
    if platform == "win32":
        return Path(environ.get("APPDATA") or home / "AppData" / "Roaming")
    if platform == "darwin":
        return home / "Library" / "Application Support"
    return Path(environ.get("XDG_CONFIG_HOME") or home / ".config")


def config_path(host: str, platform: str, environ: Mapping[str, str], home: Path) -> Path:
    """The user-wide MCP config file of `host` on `platform` (a `sys.platform` value)."""
    if host == "claude-desktop":
        # modelcontextprotocol.io, "Connect to local MCP servers": claude_desktop_config.json in the app's
        # data folder (macOS, Windows; the Linux builds use the same Electron path).
        return app_data(platform, environ, home) / "Claude" / "claude_desktop_config.json"
    if host == "claude-code":
        # docs.claude.com, Claude Code "MCP installation scopes": user scope lives in ~/.claude.json.
        return home / ".claude.json"
    if host == "cursor":
        # cursor.com/docs/context/mcp: ~/.cursor/mcp.json for servers available in every project.
        return home / ".cursor" / "mcp.json"
    if host == "vscode":
        # code.visualstudio.com/docs/copilot/reference/mcp-configuration: mcp.json of the user profile.
        return app_data(platform, environ, home) / "Code" / "User" / "mcp.json"
    raise ValueError(f"unknown host {host!r}")


def servers_key(host: str) -> str:
    # VS Code's mcp.json names its map `servers`; the other hosts use `mcpServers`.
    return "servers" if host == "vscode" else "mcpServers"


def launch_command() -> list[str]:
    return [str(Path(sys.executable).absolute()), "-m", "onlysq_mcp"]


def env_text(value: Any) -> str:
    """A setting's value written back as its environment variable would hold it."""
    from pydantic import SecretStr

    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, Path):
        # The host starts the server in a folder of its own choosing: a relative path would move.
        return str(value.expanduser().absolute())
    if isinstance(value, list):
        separator = os.pathsep if value and isinstance(value[0], Path) else ","
        return separator.join(env_text(item) for item in value)
    return str(value)


@dataclass(frozen=True)
class ServerEnv:
    values: dict[str, str]  # env var -> value, secrets included
    secret_names: frozenset[str] = field(default_factory=frozenset)


def server_env(settings: Settings) -> ServerEnv:
    """Every setting that was set, as environment variables; secrets are those `Settings.secrets()` knows.

    A value counts as secret when it contains one, so a base URL with a password in it is one too.
    """
    secrets = settings.secrets()
    values: dict[str, str] = {}
    secret_names: set[str] = set()
    for name in type(settings).model_fields:
        if name not in settings.model_fields_set:
            continue
        text = env_text(getattr(settings, name))
        values[name.upper()] = text
        if any(secret in text for secret in secrets):
            secret_names.add(name.upper())
    return ServerEnv(values, frozenset(secret_names))


@dataclass(frozen=True)
class Entry:
    server: dict[str, Any]
    inputs: list[dict[str, Any]]  # VS Code only: prompts for the secrets, stored by VS Code itself


def input_id(name: str, variable: str) -> str:
    return f"{name}-{variable.lower().replace('_', '-')}"


def build_entry(host: str, name: str, command: list[str], env: ServerEnv, show_secrets: bool) -> Entry:
    values = dict(env.values)
    inputs: list[dict[str, Any]] = []
    if not show_secrets:
        for variable in sorted(env.secret_names):
            if host == "vscode":
                # VS Code asks once for `${input:...}` values and keeps them in its secret storage
                # (code.visualstudio.com/docs/copilot/reference/mcp-configuration, "Input variables").
                ident = input_id(name, variable)
                values[variable] = f"${{input:{ident}}}"
                inputs.append({"type": "promptString", "id": ident, "description": variable, "password": True})
            else:
                values[variable] = f"<{variable}>"
    server: dict[str, Any] = {"command": command[0], "args": command[1:], "env": values}
    if host in ("vscode", "claude-code"):
        server = {"type": "stdio", **server}
    return Entry(server, inputs)


def file_snippet(host: str, name: str, entry: Entry) -> dict[str, Any]:
    snippet: dict[str, Any] = {servers_key(host): {name: entry.server}}
    if entry.inputs:
        snippet = {"inputs": entry.inputs, **snippet}
    return snippet


def claude_code_command(name: str, entry: Entry, platform: str) -> str:
    """`claude mcp add` for user scope, the form Claude Code's docs give for a stdio server."""
    words = ["claude", "mcp", "add", name, "--scope", "user", "--transport", "stdio"]
    for variable, value in entry.server["env"].items():
        words += ["--env", f"{variable}={value}"]
    words += ["--", entry.server["command"], *entry.server["args"]]
    return subprocess.list2cmdline(words) if platform == "win32" else shlex.join(words)


def render(host: str, name: str, entry: Entry, platform: str) -> str:
    if host == "claude-code":
        return claude_code_command(name, entry, platform)
    return json.dumps(file_snippet(host, name, entry), indent=2)


def backup_path(path: Path, now: datetime) -> Path:
    stamp = now.strftime("%Y%m%d-%H%M%S")
    candidate = path.with_name(f"{path.name}.bak-{stamp}")
    count = 1
    while candidate.exists():
        candidate = path.with_name(f"{path.name}.bak-{stamp}-{count}")
        count += 1
    return candidate


def read_config(path: Path, key: str) -> dict[str, Any]:
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise HostConfigError(f"{path} is larger than {MAX_CONFIG_BYTES} bytes; nothing was written.")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise HostConfigError(f"cannot read {path}: {exc}; nothing was written") from None
    if not text.strip():
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        # VS Code accepts comments in mcp.json; rewriting such a file would drop them, so it is left alone.
        raise HostConfigError(
            f"{path} is not plain JSON ({exc.msg}, line {exc.lineno}); nothing was written. "
            "Fix the file, or add the printed entry to it by hand."
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get(key, {}), dict):
        raise HostConfigError(f"{path} does not hold a JSON object with a `{key}` object; nothing was written.")
    if not isinstance(data.get("inputs", []), list):
        raise HostConfigError(f"`inputs` in {path} is not a list; nothing was written.")
    return data


def write_config(host: str, path: Path, name: str, entry: Entry, now: datetime) -> Path | None:
    """Merge the entry into `path`, keeping every other server and key; returns the backup made, if any."""
    # A config file kept elsewhere and linked into place (dotfiles) stays linked: its target is rewritten.
    path = path.resolve()
    key = servers_key(host)
    data = read_config(path, key)
    data.setdefault(key, {})[name] = entry.server
    if entry.inputs:
        wanted = {item["id"] for item in entry.inputs}
        kept = [item for item in data.get("inputs", []) if not (isinstance(item, dict) and item.get("id") in wanted)]
        data["inputs"] = kept + entry.inputs
    backup = None
    if path.exists():
        backup = backup_path(path, now)
        backup.write_bytes(path.read_bytes())
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written next to the target and renamed over it, so a crash never leaves half a config; mkstemp's
    # 0600 suits a file that may hold keys, and an existing file keeps its own mode.
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(data, out, indent=2)
            out.write("\n")
        if backup is not None:
            os.chmod(temporary, path.stat().st_mode & 0o777)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return backup


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="onlysq-mcp config",
        description="Print the MCP host entry that launches this installation of onlysq-mcp, with the settings "
        "set in this environment (secrets as placeholders), or merge it into the host's config file.",
    )
    parser.add_argument("host", choices=HOSTS)
    parser.add_argument("--name", default=DEFAULT_NAME, help=f"key of the entry (default {DEFAULT_NAME}).")
    parser.add_argument("--show-secrets", action="store_true", help="write secret values instead of placeholders.")
    parser.add_argument(
        "--write",
        action="store_true",
        help="merge the entry into the host's user config file (a backup <file>.bak-<time> is made first).",
    )
    return parser.parse_args(argv)


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    # Imported once the arguments are known good, so that `config --help` answers at once.
    from .settings import SettingsError, load_settings

    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"onlysq-mcp config: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    env = server_env(settings)
    entry = build_entry(args.host, args.name, launch_command(), env, args.show_secrets)
    path = config_path(args.host, sys.platform, os.environ, Path.home())
    placeholders = sorted(env.secret_names) if not args.show_secrets and args.host != "vscode" else []
    if not args.write:
        print(render(args.host, args.name, entry, sys.platform))
        print(f"(this belongs in {path}; --write merges it there)", file=sys.stderr)
    else:
        try:
            backup = write_config(args.host, path, args.name, entry, datetime.now())
        except (HostConfigError, OSError) as exc:
            print(f"onlysq-mcp config: {exc}", file=sys.stderr)
            raise SystemExit(1) from None
        saved = f" (previous version saved as {backup})" if backup else ""
        print(f"wrote `{args.name}` to {path}{saved}; restart the host to load it.", file=sys.stderr)
    if placeholders:
        print(
            f"replace the placeholders of {', '.join(placeholders)} with the real values, "
            "or run again with --show-secrets.",
            file=sys.stderr,
        )
