"""The stdio front door (onlysq_mcp/fast_start.py): start-up answers before the SDK has loaded, nothing else changed.

Its answers are the live server's, for every protocol version; a host gets them while the SDK is still
loading (a finder that delays `mcp.server` proves it), and every other request is answered by the real
server, whose session is in the state the handshake left it in.
"""

from __future__ import annotations

import io
import json
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from mcp import Client, StdioServerParameters
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS

from onlysq_mcp import fast_start
from scripts import generate
from tests.helpers import text_of

pytestmark = pytest.mark.anyio

SHIPPED: dict[str, Any] = json.loads(fast_start.ANSWERS.read_text(encoding="utf-8"))
VERSIONS = [(v, False) for v in HANDSHAKE_PROTOCOL_VERSIONS] + [(v, True) for v in MODERN_PROTOCOL_VERSIONS]
LATEST = HANDSHAKE_PROTOCOL_VERSIONS[-1]
# Seconds a finder holds up the import of the SDK's server package in the server process.
SDK_DELAY = 2.0
SLOW_SDK = """
import sys, time

DELAY = float(sys.argv[1])
STRAY = sys.argv[2] == "stray"

class SlowSdk:
    def find_spec(self, name, path=None, target=None):
        if name == "mcp.server":
            if STRAY:  # the front door keeps it off the wire; Wire fails on any line that is not JSON
                print("stray output")
            time.sleep(DELAY)
        return None

sys.meta_path.insert(0, SlowSdk())
sys.argv = ["onlysq-mcp"]
from onlysq_mcp.cli import main
main()
"""


class Wire:
    """A server process spoken to in raw JSON-RPC lines over its pipes; times are seconds since spawn."""

    def __init__(self, command: list[str], params: StdioServerParameters, log: Path, **env: str) -> None:
        self.started = time.monotonic()
        self.log = log.open("wb")
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            env={**(params.env or {}), **env},
            cwd=params.cwd,
        )
        self._lines: queue.Queue[tuple[float, dict[str, Any]] | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put((time.monotonic() - self.started, json.loads(line)))
        self._lines.put(None)

    def send(self, *messages: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(b"".join(json.dumps(m).encode() + b"\n" for m in messages))
        self.process.stdin.flush()

    def receive(self, count: int) -> dict[Any, tuple[float, dict[str, Any]]]:
        """The next `count` answers, by id, with when each arrived."""
        got = {}
        while len(got) < count:
            item = self._lines.get(timeout=20)
            assert item is not None, "the server closed its output"
            got[item[1].get("id")] = item
        return got

    def silent(self) -> bool:
        """Whether nothing arrived beyond what was received."""
        return self._lines.empty()

    def close(self) -> int:
        assert self.process.stdin is not None
        self.process.stdin.close()
        code = self.process.wait(timeout=20)
        self.log.close()
        return code


def slow_sdk(params: StdioServerParameters, tmp_path: Path, *, door: bool = True, **env: str) -> Wire:
    """The server, its SDK import held up for SDK_DELAY (and printing to stdout meanwhile, with the door on)."""
    env = {"ONLYSQ_MCP_FAST_START": "true" if door else "false", **env}
    command = [sys.executable, "-c", SLOW_SDK, str(SDK_DELAY), "stray" if door else "quiet"]
    return Wire(command, params, tmp_path / "server.log", **env)


def shipped(version: str, method: str) -> dict[str, Any]:
    return SHIPPED["answers"][version][method]


def body(answer: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in answer.items() if k not in ("jsonrpc", "id")}


def chat_call(key: int, prompt: str) -> dict[str, Any]:
    params = {"name": "chat", "arguments": {"prompt": prompt}}
    return {"jsonrpc": "2.0", "id": key, "method": "tools/call", "params": params}


# --- the shipped answers are the live server's ---------------------------------------------------


def test_generated_answers_are_current():
    """`scripts/generate.py --check` fails when the shipped answers differ from the live server's."""
    assert not generate.diff(generate.FAST_START), "run `python scripts/generate.py` and commit the result"


def test_fingerprint_matches_the_installed_code():
    # Otherwise the front door silently stays shut.
    assert SHIPPED["fingerprint"] == fast_start.fingerprint()
    assert fast_start.fingerprint()["mcp"]


@pytest.mark.parametrize(("version", "modern"), VERSIONS)
async def test_answers_do_not_depend_on_settings(make_settings, version, modern):
    """Every version's answers, from a server configured unlike the generator's (Yandex, other models)."""
    settings = make_settings(
        ONLYSQ_CHAT_MODEL="gpt-4o",
        ONLYSQ_IMAGE_MODEL="other",
        ONLYSQ_MCP_LOG_LEVEL="DEBUG",
        ONLYSQ_MCP_IMAGE_DELIVERY="link",
    )
    live = await generate.startup_answers(version, modern=modern, settings=settings)
    assert live == SHIPPED["answers"][version]


@pytest.mark.parametrize(("version", "modern"), [(LATEST, False), (MODERN_PROTOCOL_VERSIONS[-1], True)])
def test_the_server_over_stdio_answers_as_shipped(stdio_params, tmp_path, version, modern):
    """The installed command with the front door off: its own answers equal the shipped ones."""
    wire = Wire(stdio_params_command(stdio_params), stdio_params, tmp_path / "log", ONLYSQ_MCP_FAST_START="false")
    messages = fast_start.opening(version, modern=modern)
    wire.send(*messages)
    answers = wire.receive(sum("id" in m for m in messages))
    for message in messages:
        if "id" in message:
            assert body(answers[message["id"]][1]) == shipped(version, message["method"]), message["method"]
    assert wire.close() == 0


def stdio_params_command(params: StdioServerParameters) -> list[str]:
    return [params.command, *params.args]


# --- before the SDK has loaded -------------------------------------------------------------------


def test_start_up_answers_come_before_the_sdk_and_the_rest_after(stdio_params, upstream, tmp_path):
    wire = slow_sdk(stdio_params, tmp_path)
    init = fast_start.opening(LATEST, modern=False)[0]
    wire.send(init, {"jsonrpc": "2.0", "method": "notifications/initialized"})
    wire.send(chat_call(2, "first"), {"jsonrpc": "2.0", "id": 3, "method": "tools/list"}, chat_call(4, "second"))
    wire.send({"jsonrpc": "2.0", "id": 5, "method": "prompts/list"})
    answers = wire.receive(5)
    for key, method in ((init["id"], "initialize"), (3, "tools/list"), (5, "prompts/list")):
        when, answer = answers[key]
        assert when < SDK_DELAY, f"{method} waited for the SDK"
        assert body(answer) == shipped(LATEST, method)
    # The tool calls waited for the real server, whose session accepted them: the replayed handshake took.
    for key, prompt in ((2, "first"), (4, "second")):
        when, answer = answers[key]
        assert when >= SDK_DELAY
        assert answer["result"]["content"][0]["text"] == f"Echo: {prompt}"
    assert wire.close() == 0


def test_switched_off_the_handshake_waits_for_the_sdk(stdio_params, tmp_path):
    wire = slow_sdk(stdio_params, tmp_path, door=False, ONLYSQ_MCP_FAST_START="off")
    wire.send(fast_start.opening(LATEST, modern=False)[0])
    when, answer = wire.receive(1)[1]
    assert when >= SDK_DELAY
    assert body(answer) == shipped(LATEST, "initialize")
    assert wire.close() == 0


def test_end_of_input_before_the_server_is_ready_exits_cleanly(stdio_params, tmp_path):
    wire = slow_sdk(stdio_params, tmp_path, ONLYSQ_MCP_FAST_START="")  # empty: not set, so on
    wire.send(*fast_start.opening(LATEST, modern=False)[:3])
    when, _ = wire.receive(2)[2]
    assert when < SDK_DELAY
    assert wire.close() == 0


def test_malformed_lines_get_the_servers_own_errors(stdio_params, tmp_path):
    wire = slow_sdk(stdio_params, tmp_path)
    wire.send(fast_start.opening(LATEST, modern=False)[0])
    assert wire.process.stdin is not None
    wire.process.stdin.write(b"not json\n")
    wire.send({"jsonrpc": "2.0", "id": 7, "method": "tools/list", "params": {"cursor": "x"}})
    answers = wire.receive(2)
    assert answers[7][0] >= SDK_DELAY  # a cursor is the real server's
    assert wire.close() == 0


# --- hosts, with the front door on and off -------------------------------------------------------


def answers_to_a_busy_start(params: StdioServerParameters, upstream: Any, log: Path, switch: str) -> dict[Any, Any]:
    """Every answer to a start that mixes everything, sent at once: a cancellation, errors, log level."""
    upstream.add_fault("/ai/v2", "delay", delay=3)
    wire = Wire([params.command, *params.args], params, log, ONLYSQ_MCP_FAST_START=switch)
    wire.send(INIT, INITIALIZED, request(10, "tools/list"), chat_call(2, "slow"))
    wire.send({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 2}})
    assert wire.process.stdin is not None
    wire.process.stdin.write(b"not json\n")
    wire.send(request(4, "no/such"), request(5, "logging/setLevel", level="debug"), request(6, "prompts/list"))
    wire.send(request(7, "resources/read", uri="onlysq://jobs/none"), chat_call(8, "fast"))
    answers = wire.receive(7)  # neither the cancelled call nor the line that is not JSON gets one (SDK)
    time.sleep(0.5)
    assert wire.silent()
    assert wire.close() == 0
    return {key: body(answer) for key, (_, answer) in answers.items()}


def test_nothing_but_speed_changes(stdio_params, upstream, tmp_path):
    door_on = answers_to_a_busy_start(stdio_params, upstream, tmp_path / "on.log", "true")
    upstream.reset()
    door_off = answers_to_a_busy_start(stdio_params, upstream, tmp_path / "off.log", "false")
    assert door_on == door_off
    assert door_on[8]["result"]["content"][0]["text"] == "Echo: fast"
    assert sorted(door_on) == [INIT["id"], 4, 5, 6, 7, 8, 10]


@pytest.mark.parametrize("switch", ["true", "false"])
@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_hosts_see_the_same_server(stdio_params, upstream, mode, switch):
    params = stdio_params.model_copy(update={"env": {**(stdio_params.env or {}), "ONLYSQ_MCP_FAST_START": switch}})
    async with Client(params, mode=mode) as client:
        tools = await client.list_tools()
        assert [t.name for t in tools.tools] == ["chat", "generate_image", "describe_image", "list_models"]
        assert [str(r.uri) for r in (await client.list_resources()).resources] == ["onlysq://models"]
        assert (await client.list_resource_templates()).resource_templates
        assert (await client.list_prompts()).prompts == []
        if mode == "legacy":
            await client.set_logging_level("debug")
            await client.send_ping()
        assert text_of(await client.call_tool("chat", {"prompt": "hi"})) == "Echo: hi"


# --- the front door's choices, without a process -------------------------------------------------


def door(*messages: dict[str, Any] | bytes) -> tuple[list[dict[str, Any]], list[Any]]:
    """What a front door answers to `messages`, and what it forwards to the real server (parsed)."""
    lines = b"".join(m if isinstance(m, bytes) else json.dumps(m).encode() + b"\n" for m in messages)
    out = io.BytesIO()
    front = fast_start.FrontDoor(SHIPPED["answers"], io.BytesIO(lines), out)
    front.read()
    forwarded = []
    while (line := front.next_line()) is not None:
        try:
            forwarded.append(json.loads(line))
        except (ValueError, RecursionError):
            forwarded.append(line)
    return [json.loads(line) for line in out.getvalue().splitlines()], forwarded


def request(key: int, method: str, **params: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": key, "method": method, **({"params": params} if params else {})}


INIT = fast_start.opening(LATEST, modern=False)[0]
INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}


def test_replayed_requests_carry_private_ids_in_the_original_order():
    answered, forwarded = door(INIT, INITIALIZED, request(2, "tools/list"), request(3, "tools/call", name="x"))
    assert [a["id"] for a in answered] == [INIT["id"], 2]
    assert [m.get("method") for m in forwarded] == [
        "initialize",
        "notifications/initialized",
        "tools/list",
        "tools/call",
    ]
    assert forwarded[0]["id"].startswith(fast_start.PRIVATE_ID) and forwarded[2]["id"].startswith(fast_start.PRIVATE_ID)
    assert forwarded[0]["params"] == INIT["params"]
    assert forwarded[3]["id"] == 3


def test_only_plain_start_up_requests_are_answered():
    answered, _ = door(
        INIT,
        request(2, "resources/list"),
        request(3, "tools/list", cursor="1"),
        INIT | {"id": 4},  # a second initialize
        request(5, "tools/call", name="x"),
        request(6, "resources/list"),  # a tool may have added images since
        request(7, "prompts/list"),
        request(8, "logging/setLevel", level="debug"),
    )
    assert [a["id"] for a in answered] == [INIT["id"], 2, 7]


def test_a_connection_opened_otherwise_is_the_real_servers():
    unknown = INIT | {"params": INIT["params"] | {"protocolVersion": "2099-01-01"}}
    assert door(unknown, request(2, "tools/list"))[0] == []
    assert door(request(1, "tools/list"), INIT)[0] == []  # the first request decides the era
    assert door(b"not json\n", INIT)[1][0] == b"not json\n"
    deep = b"[" * 100_000 + b"\n"  # too deep for json: forwarded, and the door still opens
    answered, forwarded = door(deep, INIT)
    assert forwarded[0] == deep and [a["id"] for a in answered] == [INIT["id"]]


def test_modern_requests_are_answered_by_their_envelope():
    modern = fast_start.opening(MODERN_PROTOCOL_VERSIONS[-1], modern=True)
    answered, _ = door(*modern)
    assert [a["id"] for a in answered] == [m["id"] for m in modern]
    assert answered[0] | {"id": None} == {
        "jsonrpc": "2.0",
        "id": None,
        **shipped(MODERN_PROTOCOL_VERSIONS[-1], "server/discover"),
    }
    legacy_in_modern = request(9, "tools/list", _meta={fast_start.VERSION_KEY: LATEST})
    assert door(modern[0], legacy_in_modern)[0][1:] == []


def test_the_real_servers_duplicate_answers_are_dropped():
    out = io.BytesIO()
    front = fast_start.FrontDoor(SHIPPED["answers"], io.BytesIO(json.dumps(INIT).encode() + b"\n"), out)
    front.read()
    private = json.loads(front.next_line() or b"")["id"]
    written = len(out.getvalue())
    front.deliver(json.dumps({"jsonrpc": "2.0", "id": private, "result": {}}) + "\n")
    assert len(out.getvalue()) == written
    own = json.dumps({"jsonrpc": "2.0", "id": 5, "result": {"text": private}}) + "\n"
    front.deliver(own)
    front.deliver(own)
    assert out.getvalue()[written:].decode() == own * 2


def test_a_flood_before_the_server_is_ready_waits_in_a_bounded_queue():
    count = fast_start.QUEUED_LINES + 50
    lines = b"".join(json.dumps(request(i, "tools/call", name="x")).encode() + b"\n" for i in range(count))
    front = fast_start.FrontDoor(SHIPPED["answers"], io.BytesIO(lines), io.BytesIO())
    reader = threading.Thread(target=front.read, daemon=True)
    reader.start()
    reader.join(0.5)
    assert reader.is_alive()  # holding the rest of the input until the server takes lines
    taken = [json.loads(line)["id"] for line in iter(front.next_line, None)]
    assert taken == list(range(count))


@pytest.mark.parametrize(
    ("env", "dotenv", "on"),
    [
        ({}, None, True),
        ({"ONLYSQ_MCP_FAST_START": ""}, None, True),
        ({"ONLYSQ_MCP_FAST_START": "false"}, None, False),
        ({"onlysq_mcp_fast_start": "0"}, None, False),
        ({"ONLYSQ_MCP_FAST_START": "Yes"}, None, True),
        ({"ONLYSQ_MCP_FAST_START": "maybe"}, None, False),  # Settings reports it
        ({}, "export ONLYSQ_MCP_FAST_START='off'\n", False),
        ({}, "ONLYSQ_MCP_FAST_START=true # on\n", True),
        ({"ONLYSQ_MCP_FAST_START": "1"}, "ONLYSQ_MCP_FAST_START=false\n", True),
    ],
)
def test_the_switch_reads_as_settings_do(tmp_path, env, dotenv, on):
    path = tmp_path / ".env"
    if dotenv is not None:
        path.write_text(dotenv)
    assert fast_start.enabled(env, path) is on


def test_the_front_door_imports_nothing_heavy():
    probe = (
        "import os, sys; import onlysq_mcp.cli; from onlysq_mcp import fast_start as f; f.enabled(os.environ); "
        "f.fingerprint(); print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'pydantic', 'pydantic_settings', 'mcp', 'mcp_types', 'anyio', 'httpx2'}))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_switch_is_a_setting(make_settings):
    assert make_settings().onlysq_mcp_fast_start is True
    assert make_settings(ONLYSQ_MCP_FAST_START="false").onlysq_mcp_fast_start is False
