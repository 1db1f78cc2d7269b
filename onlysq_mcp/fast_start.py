"""The stdio front door: answers a host's start-up requests while the SDK loads, then hands the stream over.

Importing `mcp.server.mcpserver` takes about half a second, and hosts wait for every server's handshake
when they start. What a host asks first (`initialize` or `server/discover`, `tools/list`, `prompts/list`,
`resources/list`, `resources/templates/list`, `ping`) has one answer per protocol version, the same for
every configuration: `scripts/generate.py` records the real server's answers in `data/fast_start.json`,
and a test compares them with what the live server says, for every version.

A reader thread answers those requests from the file at once. Every line still goes to the real server,
in order, once it has loaded: each request answered here under a private id, whose answer is then dropped,
so its session (era, negotiated version, initialized) ends up as if it had answered the handshake itself.
Anything else waits for the real server and is answered by it, in the order it came.

This module imports only the standard library: it runs before anything heavy is imported.
"""

from __future__ import annotations

import json
import os
import queue
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from . import __version__

if TYPE_CHECKING:
    from mcp.server.mcpserver import MCPServer

ANSWERS = Path(__file__).with_name("data") / "fast_start.json"
SWITCH = "ONLYSQ_MCP_FAST_START"
# The 2026-07-28 per-request envelope (mcp_types/_types.py, mcp/server/runner.py `_has_modern_envelope`).
VERSION_KEY = "io.modelcontextprotocol/protocolVersion"
CLIENT_INFO_KEY = "io.modelcontextprotocol/clientInfo"
CLIENT_CAPABILITIES_KEY = "io.modelcontextprotocol/clientCapabilities"
# Ids of the requests replayed to the real server: no client names its requests like this.
PRIVATE_ID = "onlysq-mcp/fast-start/replayed/"
# Lines held for the real server before the reader stops reading: the SDK's own reader waits for the
# server at every line (a zero-size stream, mcp/server/stdio.py); this lets a host's start-up burst through.
QUEUED_LINES = 256
LISTS = ("tools/list", "prompts/list", "resources/list", "resources/templates/list", "ping")
# pydantic's literals for a bool (pydantic-core's str → bool parser), as `Settings` reads the same variable.
TRUE = frozenset({"1", "on", "t", "true", "y", "yes"})


def opening(version: str, *, modern: bool) -> list[dict[str, Any]]:
    """The start-up messages of a host speaking `version` (`modern`: in the 2026-07-28 envelope, no handshake)."""
    if modern:
        meta = {VERSION_KEY: version, CLIENT_INFO_KEY: {"name": "host", "version": "1"}, CLIENT_CAPABILITIES_KEY: {}}
        first = [{"method": "server/discover", "params": {"_meta": meta}}]
        params: dict[str, Any] = {"params": {"_meta": meta}}
    else:
        init = {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "host", "version": "1"}}
        first = [{"method": "initialize", "params": init}, {"method": "notifications/initialized"}]
        params = {}
    messages = [*first, *({"method": method, **params} for method in LISTS)]
    ids = iter(range(1, len(messages) + 1))
    return [
        {"jsonrpc": "2.0", **({} if m["method"].startswith("notifications/") else {"id": next(ids)}), **m}
        for m in messages
    ]


def enabled(environ: Mapping[str, str], env_file: Path = Path(".env")) -> bool:
    """Whether `ONLYSQ_MCP_FAST_START` allows the front door, read as `Settings` would, without pydantic.

    Unset or empty means on. Anything but a true literal means off: a value that is not a bool at all
    then reaches `Settings`, which reports it.
    """
    value = next((v for k, v in environ.items() if k.upper() == SWITCH and v), None)
    if value is None:
        value = dotenv_value(env_file)
    return not value or value.strip().lower() in TRUE


def dotenv_value(path: Path) -> str | None:
    """The switch's value in a `.env` file (python-dotenv's common forms: `export`, quotes, comments)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    found = None
    for line in lines:
        key, sep, value = line.strip().removeprefix("export ").partition("=")
        if not sep or key.strip().upper() != SWITCH:
            continue
        value = value.strip()
        if value[:1] in ("'", '"') and value[-1:] == value[:1] and len(value) > 1:
            value = value[1:-1]
        else:
            value = value.split(" #", 1)[0].strip()
        found = value
    return found


def sdk_version() -> str | None:
    """The installed `mcp` distribution's version, from its dist-info folder (importlib.metadata costs 50 ms)."""
    import importlib.util

    spec = importlib.util.find_spec("mcp")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))).parent
    try:
        names = os.listdir(folder)
    except OSError:
        return None
    versions = [n[4:-10] for n in names if n.startswith("mcp-") and n.endswith(".dist-info")]
    return versions[0] if len(versions) == 1 else None


def fingerprint() -> dict[str, str | None]:
    """What the shipped answers depend on: they are used only when the running code matches."""
    return {"onlysq-mcp": __version__, "mcp": sdk_version()}


class FrontDoor:
    """Owns the stdio wire: answers start-up requests, queues every line for the real server, filters its output."""

    def __init__(self, answers: dict[str, dict[str, Any]], wire_in: IO[bytes], wire_out: IO[bytes]) -> None:
        self._answers = answers
        self._in = wire_in
        self._out = wire_out
        self._lock = threading.Lock()
        self._lines: queue.Queue[bytes | None] = queue.Queue(QUEUED_LINES)
        self._ready = False
        # The protocol version this connection speaks, once its first request was answered here; "" when
        # the first request was not, and everything goes to the real server.
        self._version: str | None = None
        self._modern = False
        # Until a message other than a start-up one is forwarded, nothing can have changed what
        # `resources/list` answers (the session's images).
        self._untouched = True
        self._replayed: set[str] = set()
        self._count = 0

    # --- the host's side (reader thread) ---

    def read(self) -> None:
        ready = False
        for line in iter(self._in.readline, b""):
            if not ready:
                with self._lock:
                    ready = self._ready
                    if not ready:
                        line = self._take(line)
            self._lines.put(line)
        self._lines.put(None)

    def _take(self, line: bytes) -> bytes:
        """Answer `line` here if it is a start-up request; what to forward to the real server."""
        try:
            message = json.loads(line)
        except (ValueError, RecursionError):  # not JSON, or nested too deep: the SDK's parser answers it
            message = None
        answer = self._answer(message) if isinstance(message, dict) else None
        if answer is None:
            if not (isinstance(message, dict) and message.get("method") == "notifications/initialized"):
                self._untouched = False
            return line
        assert isinstance(message, dict)
        private = f"{PRIVATE_ID}{self._count + 1}"
        replay = (json.dumps({**message, "id": private}, ensure_ascii=False) + "\n").encode()
        self._send(json.dumps({"jsonrpc": "2.0", "id": message["id"], **answer}, ensure_ascii=False) + "\n")
        self._count += 1
        self._replayed.add(private)
        return replay

    def _answer(self, message: dict[str, Any]) -> dict[str, Any] | None:
        """The shipped answer to `message`, or None when only the real server may answer it."""
        method, params, key = message.get("method"), message.get("params"), message.get("id")
        if message.get("jsonrpc") != "2.0" or type(key) not in (int, str) or not isinstance(method, str):
            return None
        params = {} if params is None else params
        if not isinstance(params, dict):
            return None
        if self._version is None:
            self._version = self._opened(method, params)
            self._modern = bool(self._version) and method != "initialize"
            if method == "initialize":
                return self._answers[self._version][method] if self._version else None
        if not self._version or method == "initialize" or set(params) - {"_meta"}:
            return None  # a second `initialize`, a cursor, anything unusual: the real server's
        if method == "resources/list" and not self._untouched:
            return None
        meta = params.get("_meta")
        if self._modern and envelope_version(meta) != self._version:
            return None
        if not self._modern and isinstance(meta, dict) and VERSION_KEY in meta:
            return None
        answer: dict[str, Any] | None = self._answers[self._version].get(method)
        return answer

    def _opened(self, method: str, params: dict[str, Any]) -> str:
        """The version a connection's first request opens, "" when the real server must answer it.

        The first request decides the era (mcp/server/runner.py, `serve_dual_era_loop`): `initialize`
        opens a handshake, a request in the 2026-07-28 envelope a stateless connection.
        """
        if method == "initialize":
            version, opener = params.get("protocolVersion") if valid_initialize(params) else None, "initialize"
        else:
            version, opener = envelope_version(params.get("_meta")), "server/discover"
        return version if isinstance(version, str) and opener in self._answers.get(version, {}) else ""

    def _send(self, text: str) -> None:
        """Write one message to the host: from the reader thread until the real server runs, from it after."""
        self._out.write(text.encode())
        self._out.flush()

    # --- the real server's side ---

    def next_line(self) -> bytes | None:
        """The next line for the real server (blocking); None at the end of the input."""
        return self._lines.get()

    def deliver(self, text: str) -> None:
        """A message of the real server to the host, unless it answers a request replayed to it.

        Called once the real server runs: the reader thread no longer writes, and the SDK writes one
        message at a time (mcp/server/stdio.py, `stdout_writer`), so no lock is needed.
        """
        if self._replayed and PRIVATE_ID in text:
            message = json.loads(text)
            if isinstance(message, dict) and "method" not in message and message.get("id") in self._replayed:
                self._replayed.discard(message["id"])
                return
        self._send(text)

    def serve(self, server: MCPServer[Any]) -> None:
        """Run `server` on the lines of this front door until the host closes its input."""
        import anyio

        with self._lock:
            self._ready = True

        async def lines() -> AsyncIterator[str]:
            while (line := await anyio.to_thread.run_sync(self.next_line, abandon_on_cancel=True)) is not None:
                yield line.decode("utf-8", errors="replace")

        async def write(text: str) -> None:
            await anyio.to_thread.run_sync(self.deliver, text)

        anyio.run(serve_lines, server, lines(), write)


def valid_initialize(params: dict[str, Any]) -> bool:
    """Whether the SDK would accept these `initialize` params (mcp_types `InitializeRequestParams`)."""
    info = params.get("clientInfo")
    return (
        isinstance(params.get("protocolVersion"), str)
        and isinstance(params.get("capabilities"), dict)
        and isinstance(info, dict)
        and isinstance(info.get("name"), str)
        and isinstance(info.get("version"), str)
    )


def envelope_version(meta: object) -> str | None:
    """The version of a complete 2026-07-28 envelope (version, client info and capabilities), else None."""
    if not isinstance(meta, dict):
        return None
    version, info = meta.get(VERSION_KEY), meta.get(CLIENT_INFO_KEY)
    complete = (
        isinstance(meta.get(CLIENT_CAPABILITIES_KEY), dict)
        and isinstance(info, dict)
        and isinstance(info.get("name"), str)
        and isinstance(info.get("version"), str)
    )
    return version if complete and isinstance(version, str) else None


async def serve_lines(
    server: MCPServer[Any], lines: AsyncIterator[str], write: Callable[[str], Awaitable[None]]
) -> None:
    """What `MCPServer.run_stdio_async` does (mcp/server/mcpserver/server.py), on these lines instead of fd 0/1.

    The SDK's `stdio_server` parses and serialises the messages as it always does; it only reads and
    writes through `lines` and `write`.
    """
    from typing import cast

    import anyio
    from mcp.server.stdio import stdio_server

    class Output:
        async def write(self, text: str) -> None:
            await write(text)

        async def flush(self) -> None:
            return None

    stdin = cast("anyio.AsyncFile[str]", lines)
    stdout = cast("anyio.AsyncFile[str]", Output())
    lowlevel = server._lowlevel_server
    async with stdio_server(stdin=stdin, stdout=stdout) as (read_stream, write_stream):
        await lowlevel.run(read_stream, write_stream, lowlevel.create_initialization_options())


def claim_stdio() -> tuple[IO[bytes], IO[bytes]]:
    """The wire, on private descriptors; fd 0 then reads the null device and fd 1 writes to stderr.

    As the SDK's `stdio_server` does for the streams it owns (mcp/server/stdio.py, `_claim_fd`), so that
    nothing printed by accident, here or in a child process, lands between protocol messages.
    """
    # Each step that can fail comes before the first one that changes fd 0 or 1.
    wire_in, wire_out = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDONLY)
    sys.stdout.flush()
    os.dup2(2, 1)
    os.dup2(null, 0)
    os.close(null)
    return os.fdopen(wire_in, "rb"), os.fdopen(wire_out, "wb")


def start(environ: Mapping[str, str]) -> FrontDoor | None:
    """The front door, answering from now on; None when it is switched off or its answers do not fit this code."""
    if not enabled(environ):
        return None
    try:
        shipped = json.loads(ANSWERS.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if shipped.get("fingerprint") != fingerprint():
        return None
    try:
        wire = claim_stdio()
    except OSError:  # no descriptors to spare: the SDK's stdio_server copes with that on its own
        return None
    front = FrontDoor(shipped["answers"], *wire)
    threading.Thread(target=front.read, name="onlysq-mcp front door", daemon=True).start()
    return front
