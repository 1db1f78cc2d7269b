"""The `onlysq-mcp` command: stdio by default, streamable HTTP with `--transport http`."""

from __future__ import annotations

import argparse
import logging
import os
import sys
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
YANDEX_FOLDER_ID, ONLYSQ_MCP_OUTPUT_DIR, ONLYSQ_MCP_HTTP_TOKEN. The README lists them all.
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


def main(argv: list[str] | None = None) -> None:
    arguments = sys.argv[1:] if argv is None else argv
    if arguments[:1] == ["config"]:
        # A subcommand of its own, dispatched before anything heavy is imported for the server.
        from .host_config import main as config_main

        config_main(arguments[1:])
        return
    args = parse_args(arguments)
    front = None
    if args.transport == "stdio":
        # Before anything heavy is imported: it answers the host's start-up requests while the rest loads.
        from .fast_start import start

        front = start(os.environ)
    # Imported after argument parsing so that --help and --version answer at once.
    from .settings import SettingsError, load_settings

    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"onlysq-mcp: {exc}", file=sys.stderr)
        raise SystemExit(2) from None

    configure_logging(settings)
    from .server import app_factory

    server = app_factory(settings, transport=args.transport)
    if front is not None:
        front.serve(server)
        return
    if args.transport == "stdio":
        server.run("stdio")
        return
    from .http_app import UnsafeBindError, check_bind, serve_http

    try:
        check_bind(settings, args.host, args.allow_unauthenticated)
    except UnsafeBindError as exc:
        print(f"onlysq-mcp: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    serve_http(server, settings, args.host, args.port, stateless=args.stateless)


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
