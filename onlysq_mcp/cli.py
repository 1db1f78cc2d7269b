"""The `onlysq-mcp` command: stdio by default, streamable HTTP with `--transport http`."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from . import __version__

if TYPE_CHECKING:
    from .settings import Settings

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

DESCRIPTION = """\
MCP server for the OnlySq AI API (chat, image generation, vision, model list) and Yandex AI Studio (chat, images).

By default it speaks MCP over stdio, as MCP hosts (Claude Desktop, Claude Code, Cursor, VS Code) expect
when they launch it. With --transport http it serves streamable HTTP at http://HOST:PORT/mcp.
"""

EPILOG = """\
Configuration comes from environment variables or a .env file in the working directory, e.g.
ONLYSQ_API_KEY (default: the public key `openai`), ONLYSQ_BASE_URL, ONLYSQ_CHAT_MODEL, YANDEX_API_KEY,
YANDEX_FOLDER_ID, ONLYSQ_MCP_OUTPUT_DIR, ONLYSQ_MCP_HTTP_TOKEN, ONLYSQ_MCP_PROXY (HTTPS_PROXY and the like are
ignored). The README lists them all; an unknown ONLYSQ_* or YANDEX_* name gets a warning at start.
Logs go to stderr.

`onlysq-mcp config {claude-desktop,claude-code,cursor,vscode}` prints the entry that launches this
installation from that host (`--write` merges it into the host's config file); see `onlysq-mcp config -h`.
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="onlysq-mcp",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--transport",
        choices=["stdio", "http"],
        default="stdio",
        help="stdio (default): talk to the host that launched this process; http: serve streamable HTTP.",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="HTTP only: address to listen on (default 127.0.0.1; IPv6 as ::1 or [::1])."
    )
    parser.add_argument("--port", type=int, default=8000, help="HTTP only: port to listen on (default 8000).")
    parser.add_argument(
        "--allow-unauthenticated",
        action="store_true",
        help="HTTP only: serve on a non-loopback address without ONLYSQ_MCP_HTTP_TOKEN "
        "(only behind something that already checks who connects).",
    )
    parser.add_argument(
        "--stateless",
        action="store_true",
        help="HTTP only: no MCP sessions, every request served on its own (as ONLYSQ_MCP_STATELESS=true), "
        "for replicas behind a load balancer without sticky sessions.",
    )
    parser.add_argument("--version", action="version", version=f"onlysq-mcp {__version__}")
    return parser.parse_args(argv)


TERMINAL_NOTE = (
    "onlysq-mcp is an MCP server: it waits for an MCP host on stdin/stdout, so typing here does nothing useful. "
    "`onlysq-mcp config <host>` prints the entry that lets a host launch it (see the README). Ctrl-C to quit."
)
# Variables with these prefixes are this server's: one it does not know is most likely a typo.
PREFIXES = ("ONLYSQ_", "YANDEX_")
# Exit status of a process ended by SIGINT, as shells report it (128 + 2).
INTERRUPTED = 130


def main(argv: list[str] | None = None) -> None:
    arguments = sys.argv[1:] if argv is None else argv
    if arguments[:1] == ["config"]:
        # A subcommand of its own, dispatched before anything heavy is imported for the server.
        from .host_config import main as config_main

        config_main(arguments[1:])
        return
    args = parse_args(arguments)
    signal.signal(signal.SIGINT, quit_at_once)
    front = None
    if args.transport == "stdio":
        if sys.stdin is not None and sys.stdin.isatty():
            say(TERMINAL_NOTE)
        # Before anything heavy is imported: it answers the host's start-up requests while the rest loads.
        from .fast_start import start

        front = start(os.environ)
    # Imported after argument parsing so that --help and --version answer at once.
    from .settings import Settings, SettingsError, load_settings

    # Before the settings are read: a misspelt name may be why they are invalid.
    for warning in unknown_variables(os.environ, Path(str(Settings.model_config.get("env_file")))):
        say(warning)
    try:
        settings = load_settings()
    except SettingsError as exc:
        say(f"onlysq-mcp: {exc}")
        raise SystemExit(2) from None

    configure_logging(settings)
    from .server import app_factory

    server = app_factory(settings, transport=args.transport)
    if args.transport == "stdio":
        announce(settings, start_line(settings, "stdio"))
        if front is not None:
            front.serve(server)
        else:
            server.run("stdio")
        return
    from .http_app import UnsafeBindError, check_bind, serve_http

    try:
        check_bind(settings, args.host, args.allow_unauthenticated)
    except UnsafeBindError as exc:
        say(f"onlysq-mcp: {exc}")
        raise SystemExit(2) from None
    host = f"[{args.host.strip('[]')}]" if ":" in args.host else args.host
    announce(settings, start_line(settings, f"streamable HTTP at http://{host}:{args.port}/mcp"))
    serve_http(server, settings, args.host, args.port, stateless=args.stateless)


def say(line: str) -> None:
    """One line for the person at the terminal or in the host's log: stderr, as stdout carries the protocol.

    Best effort: a host's log file on a full disk (EFBIG, ENOSPC) or a closed stderr must not stop the server.
    """
    with contextlib.suppress(OSError, ValueError):
        print(line, file=sys.stderr, flush=True)


def announce(settings: Settings, line: str) -> None:
    """The start line, whatever the log level: as it is, or one JSON object like every line of a JSON log."""
    if settings.onlysq_mcp_log_format != "json":
        say(line)
        return
    logger = logging.getLogger("onlysq_mcp")
    logger.handle(logger.makeRecord(logger.name, logging.INFO, __file__, 0, line, (), None))


def quit_at_once(signum: int, frame: FrameType | None) -> None:
    """Ctrl-C ends the process at once, without a traceback.

    Python's own handler raises KeyboardInterrupt in the main thread, while the stdio reader threads stay
    blocked on their input and keep the process alive until a second or third Ctrl-C. Over HTTP uvicorn
    installs its own handler while it serves (a graceful shutdown), then restores this one and raises the
    signal again (uvicorn/server.py, `capture_signals`): this ends the process after that shutdown.
    """
    sys.stderr.flush()
    os._exit(INTERRUPTED)


def start_line(settings: Settings, transport: str) -> str:
    """What this process is and where it works, in one line: version, transport, output folder, providers, proxy."""
    from .providers.registry import PROVIDERS
    from .redaction import Redactor, display_url

    providers = ", ".join(kind.title for kind in PROVIDERS if kind.configured(settings))
    proxy = f"; proxy {display_url(settings.onlysq_mcp_proxy)}" if settings.onlysq_mcp_proxy else ""
    line = (
        f"onlysq-mcp {__version__} over {transport}; images saved to {settings.storage_url}; "
        f"providers: {providers}{proxy}"
    )
    return Redactor(settings.secrets())(line)


def unknown_variables(environ: Mapping[str, str], env_file: Path) -> list[str]:
    """A warning for each ONLYSQ_*/YANDEX_* variable (environment or `.env`) that is no setting, with the closest one."""
    import difflib

    from dotenv import dotenv_values

    from .settings import Settings

    known = list(Settings.model_fields)
    sources = [(name, "") for name in environ]
    if env_file.is_file():
        sources += [(name, f" (in {env_file})") for name in dotenv_values(env_file)]
    warnings = []
    for name, where in dict.fromkeys(sources):
        # Settings are read case-insensitively.
        if not name.upper().startswith(PREFIXES) or name.lower() in known:
            continue
        closest = difflib.get_close_matches(name.lower(), known, n=1, cutoff=0.6)
        hint = f"; did you mean {closest[0].upper()}?" if closest else "; the README lists every setting."
        warnings.append(f"onlysq-mcp: warning: {name}{where} is not a setting of onlysq-mcp and is ignored{hint}")
    return warnings


def configure_logging(settings: Settings) -> None:
    """Every log line goes to stderr (stdout belongs to the protocol in stdio mode), masked of secrets.

    The formatter masks a record's final text, tracebacks included; warnings are routed through logging
    so that theirs is masked too.
    """
    from .redaction import RedactingFormatter, RedactingJsonFormatter, Redactor

    redact = Redactor(settings.secrets())
    handler = logging.StreamHandler(sys.stderr)
    json_lines = settings.onlysq_mcp_log_format == "json"
    handler.setFormatter(RedactingJsonFormatter(redact) if json_lines else RedactingFormatter(redact, LOG_FORMAT))
    logging.basicConfig(level=settings.onlysq_mcp_log_level, handlers=[handler])
    logging.captureWarnings(True)
    if settings.onlysq_mcp_log_level != "DEBUG":
        # A line per upstream request is noise at INFO, and costs a few percent of every call.
        for name in ("httpx2", "httpcore2"):
            logging.getLogger(name).setLevel(logging.WARNING)
