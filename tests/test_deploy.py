"""Deployment behind a load balancer or in Kubernetes, through real HTTP server processes: stateless
replicas sharing one output folder, the probe endpoints, JSON logs."""

from __future__ import annotations

import base64
import http.server
import json
import logging
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import ClassVar

import anyio
import httpx2
import pytest
from mcp import Client

from onlysq_mcp.redaction import RedactingJsonFormatter, Redactor
from onlysq_mcp.settings import Settings
from onlysq_mcp.telemetry import configure_tracing
from tests.fake_upstream import CHAT_PATH
from tests.helpers import (
    HTTP_TOKEN,
    INITIALIZE,
    MCP_HEADERS,
    TEST_KEY,
    free_port,
    start_http_server,
    stop_http_server,
    text_of,
    upstream_env,
)

pytestmark = pytest.mark.anyio

TOOL_CALL = {
    "jsonrpc": "2.0",
    "id": 2,
    "method": "tools/call",
    "params": {"name": "chat", "arguments": {"prompt": "no session"}},
}


def sse_result(response: httpx2.Response) -> dict:
    """The JSON-RPC message of a one-event SSE (or plain JSON) answer."""
    if response.headers["content-type"].startswith("application/json"):
        return response.json()
    [data] = [line.removeprefix("data:").strip() for line in response.text.splitlines() if line.startswith("data:")]
    return json.loads(data)


async def test_stateless_replicas_share_images_by_uri(upstream, tmp_path):
    folder = tmp_path / "images"
    env = upstream_env(upstream.base_url, folder, ONLYSQ_MCP_MAX_SESSIONS_PER_CLIENT="1")
    replica_a = start_http_server(env, tmp_path, "--stateless")
    replica_b = start_http_server(env | {"ONLYSQ_MCP_STATELESS": "true"}, tmp_path)
    try:
        upstream.chat_reply = "An answer that arrives in many small pieces. " * 4
        upstream.stream_chunk_delay = 0.02
        progress: list[float] = []

        async def on_progress(done: float, total: float | None, message: str | None) -> None:
            progress.append(done)

        async with Client(replica_a.url, mode="legacy") as via_a:
            result = await via_a.call_tool("generate_image", {"prompt": "shared"})
            [image] = result.structured_content["images"]
            # Notifications about a request travel on that request's own answer: progress still arrives.
            streamed = await via_a.call_tool("chat", {"prompt": "stream"}, progress_callback=on_progress)
        upstream.reset()
        async with Client(replica_b.url, mode="legacy") as via_b:
            read = await via_b.read_resource(image["uri"])
            listed = await via_b.list_resources()
        # Sessions are not counted: more calls at once than ONLYSQ_MCP_MAX_SESSIONS_PER_CLIENT all work.
        upstream.add_fault(CHAT_PATH, "delay", delay=0.5, times=3)
        answers: dict[str, str] = {}

        async def ask(prompt: str) -> None:
            async with Client(replica_b.url, mode="legacy") as client:
                answers[prompt] = text_of(await client.call_tool("chat", {"prompt": prompt}))

        async with anyio.create_task_group() as calls:
            for prompt in "123":
                calls.start_soon(ask, prompt)

        async with httpx2.AsyncClient(timeout=30) as http:
            opened = await http.post(replica_a.url, json=INITIALIZE, headers=MCP_HEADERS)
            # A call that never saw an `initialize` on this replica, without a session id: served.
            called = await http.post(
                replica_b.url, json=TOOL_CALL, headers=MCP_HEADERS | {"mcp-protocol-version": "2025-11-25"}
            )
    finally:
        stop_http_server(replica_a)
        stop_http_server(replica_b)

    assert base64.b64decode(read.contents[0].blob) == (folder / image["uri"].rsplit("/", 1)[1]).read_bytes()
    # No session, so no per-session list: images are reached by the URIs in results.
    assert [str(r.uri) for r in listed.resources] == ["onlysq://models"]
    assert text_of(streamed) == "An answer that arrives in many small pieces. " * 4 and len(progress) >= 2
    assert answers == {"1": "Echo: 1", "2": "Echo: 2", "3": "Echo: 3"}
    assert opened.status_code == 200 and "mcp-session-id" not in opened.headers
    assert called.status_code == 200
    assert sse_result(called)["result"]["content"][0]["text"] == "Echo: no session"


async def test_stateful_by_default(upstream, tmp_path):
    server = start_http_server(upstream_env(upstream.base_url, tmp_path / "images"), tmp_path)
    try:
        async with httpx2.AsyncClient(timeout=30) as http:
            opened = await http.post(server.url, json=INITIALIZE, headers=MCP_HEADERS)
            called = await http.post(
                server.url, json=TOOL_CALL, headers=MCP_HEADERS | {"mcp-protocol-version": "2025-11-25"}
            )
    finally:
        stop_http_server(server)
    assert opened.status_code == 200 and "mcp-session-id" in opened.headers
    assert called.status_code == 400  # a session server refuses a call outside a session


@pytest.fixture
def token_server(upstream, tmp_path):
    env = upstream_env(upstream.base_url, tmp_path / "images", ONLYSQ_MCP_HTTP_TOKEN=HTTP_TOKEN)
    server = start_http_server(env, tmp_path)
    yield server
    stop_http_server(server)


def probe_url(server, path: str) -> str:
    return server.url.removesuffix("/mcp") + path


async def test_probes_answer_without_token_or_known_host(token_server, upstream):
    # A kubelet sends the pod's IP as Host and no token.
    headers = {"host": "10.1.2.3:8000"}
    async with httpx2.AsyncClient(timeout=10) as http:
        live = await http.get(probe_url(token_server, "/healthz"), headers=headers)
        ready = [await http.get(probe_url(token_server, "/readyz"), headers=headers) for _ in range(4)]
        head = await http.head(probe_url(token_server, "/healthz"), headers=headers)
        mcp = await http.post(token_server.url, json=INITIALIZE, headers=MCP_HEADERS)
        other = await http.get(probe_url(token_server, "/healthz/x"), headers=headers)
    assert (live.status_code, live.json()) == (200, {"status": "ok"})
    assert [(r.status_code, r.json()) for r in ready] == [(200, {"status": "ready"})] * 4
    assert head.status_code == 200 and head.content == b""
    # Everything else still needs the token.
    assert mcp.status_code == 401 and other.status_code == 401
    # Readiness was checked once for the four probes: they cannot hammer the upstream.
    assert len(upstream.requests_to("/")) == 1
    assert "onlysq" not in live.text + ready[0].text


@pytest.mark.parametrize("down", ["closed port", "503"])
async def test_not_ready_when_upstream_is_down(upstream, tmp_path, down):
    if down == "503":
        base_url = upstream.base_url
        upstream.add_fault("/", "status", status=503, message=f"upstream broke, key {TEST_KEY}")
    else:
        base_url = f"http://127.0.0.1:{free_port()}"
    server = start_http_server(upstream_env(base_url, tmp_path / "images"), tmp_path)
    try:
        async with httpx2.AsyncClient(timeout=10) as http:
            live = await http.get(probe_url(server, "/healthz"))
            ready = await http.get(probe_url(server, "/readyz"))
    finally:
        stop_http_server(server)
    assert live.status_code == 200
    assert (ready.status_code, ready.json()) == (503, {"status": "not ready"})
    log = server.log.read_text()
    assert "Not ready: the OnlySq API" in log and TEST_KEY not in log
    # A failing probe is in the access log, a passing one is not.
    assert '"GET /readyz HTTP/1.1" 503' in log and "/healthz" not in log


async def test_not_ready_when_the_output_folder_is_not_writable(upstream, tmp_path):
    blocker = tmp_path / "a file"
    blocker.write_text("not a folder")
    server = start_http_server(upstream_env(upstream.base_url, blocker / "images"), tmp_path)
    try:
        async with httpx2.AsyncClient(timeout=10) as http:
            ready = await http.get(probe_url(server, "/readyz"))
    finally:
        stop_http_server(server)
    assert (ready.status_code, ready.json()) == (503, {"status": "not ready"})
    assert "Not ready: cannot write to the output folder" in server.log.read_text()
    assert "a file" not in ready.text


async def test_json_logs_are_objects_one_a_line(upstream, tmp_path):
    upstream.add_fault("/", "status", status=503)
    env = upstream_env(upstream.base_url, tmp_path / "images", ONLYSQ_MCP_LOG_FORMAT="json")
    server = start_http_server(env, tmp_path)
    try:
        async with httpx2.AsyncClient(timeout=10) as http:
            await http.get(probe_url(server, "/readyz"))
        async with Client(server.url, mode="legacy") as client:
            await client.call_tool("chat", {"prompt": "logged"})
    finally:
        stop_http_server(server)
    lines = [json.loads(line) for line in server.log.read_text().splitlines()]
    assert len(lines) > 3 and all(set(line) == {"time", "level", "logger", "message"} for line in lines)
    [not_ready] = [line for line in lines if line["message"].startswith("Not ready")]
    assert not_ready["level"] == "WARNING" and not_ready["logger"] == "onlysq_mcp.health"
    assert not_ready["time"].endswith("Z") and "T" in not_ready["time"]


def test_json_log_lines_are_masked_before_encoding():
    secret = 'se"cr\\et-value'
    formatter = RedactingJsonFormatter(Redactor([secret]))
    try:
        raise ValueError(f"upstream said {secret}")
    except ValueError:
        record = logging.getLogger("t").makeRecord("t", logging.ERROR, __file__, 1, "key %s", (secret,), sys.exc_info())
    line = formatter.format(record)
    message = json.loads(line)["message"]
    assert message.startswith("key ***\nTraceback") and "upstream said ***" in message
    # Neither the secret nor its JSON-escaped form is in the line, which is one line.
    assert secret not in line and json.dumps(secret)[1:-1] not in line and "\n" not in line


ROOT = Path(__file__).resolve().parent.parent


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments left out."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_dockerfile_is_slim_non_root_with_a_healthcheck_and_no_secrets():
    instructions = dockerfile_instructions()
    [base] = [args for name, args in instructions if name == "FROM"]
    assert re.fullmatch(r"python:3\.1[1-9]-slim", base)
    users = [args for name, args in instructions if name == "USER"]
    assert users and users[-1] not in ("root", "0") and not users[-1].startswith(("root:", "0:"))
    # The user is set before the command runs, after everything that needs root.
    assert [name for name, _ in instructions].index("USER") > max(
        i for i, (name, _) in enumerate(instructions) if name == "RUN"
    )
    assert [args for name, args in instructions if name == "EXPOSE"] == ["8000"]
    installs = [args for name, args in instructions if name == "RUN" and "pip install" in args]
    assert installs and all("--no-cache-dir" in args for args in installs)
    assert json.loads(dict(instructions)["CMD"])[:5] == ["onlysq-mcp", "--transport", "http", "--host", "0.0.0.0"]
    # Nothing secret is baked into the image: keys and the token come at run time.
    for name, args in instructions:
        if name in ("ENV", "ARG"):
            assert not re.search(r"(KEY|TOKEN|SECRET|PASSWORD)\w*\s*=", args, re.IGNORECASE), args
    # Everything copied exists, and nothing else (a local .env) gets into the build context.
    for name, args in instructions:
        if name == "COPY":
            assert all((ROOT / source).exists() for source in args.split()[:-1])
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert "*" in ignored and not any(line.startswith("!.env") for line in ignored)


def healthcheck_command(port: int) -> list[str]:
    [check] = [args for name, args in dockerfile_instructions() if name == "HEALTHCHECK"]
    command = json.loads(check.split("CMD", 1)[1])
    assert command[0] == "python" and "/healthz" in command[-1]
    return [sys.executable, *command[1:-1], command[-1].replace(":8000/", f":{port}/")]


async def test_the_dockerfile_healthcheck_probes_a_running_server(upstream, tmp_path):
    server = start_http_server(upstream_env(upstream.base_url, tmp_path / "images"), tmp_path)
    try:
        alive = subprocess.run(healthcheck_command(server.port), capture_output=True, timeout=10)
    finally:
        stop_http_server(server)
    stopped = subprocess.run(healthcheck_command(server.port), capture_output=True, timeout=10)
    assert alive.returncode == 0, alive.stderr
    assert stopped.returncode != 0


def test_the_deployment_guide_matches_the_image_and_the_settings():
    guide = (ROOT / "docs" / "deploy.md").read_text()
    [user] = [args for name, args in dockerfile_instructions() if name == "USER"]
    assert f"runAsUser: {user}" in guide and "replicas: 2" in guide
    assert re.search(r"livenessProbe:\s+httpGet:\s+path: /healthz", guide)
    assert re.search(r"readinessProbe:\s+httpGet:\s+path: /readyz", guide)
    # Every setting the guide names exists, spelled as the server reads it.
    named = set(re.findall(r"\b(?:ONLYSQ|YANDEX)_[A-Z0-9_]+\b", guide))
    assert named and named <= {name.upper() for name in Settings.model_fields}, named


class Collector(http.server.BaseHTTPRequestHandler):
    """An OTLP/HTTP trace collector that keeps what it receives."""

    received: ClassVar[list[bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        if self.path == "/v1/traces":
            self.received.append(body)
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def exported_spans(bodies: list[bytes]) -> list[tuple[str, str]]:
    """(service name, span name) of every span in OTLP/HTTP export requests."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    spans = []
    for body in bodies:
        request = ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            attributes = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope in resource_spans.scope_spans:
                spans += [(attributes.get("service.name", ""), span.name) for span in scope.spans]
    return spans


async def test_traces_are_exported_when_an_otlp_endpoint_is_set(upstream, tmp_path):
    collector = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    Collector.received.clear()
    env = upstream_env(
        upstream.base_url,
        tmp_path / "images",
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{collector.server_address[1]}",
        OTEL_BSP_SCHEDULE_DELAY="50",
    )
    server = start_http_server(env, tmp_path)
    try:
        async with Client(server.url, mode="legacy") as client:
            await client.call_tool("chat", {"prompt": "traced"})
        with anyio.fail_after(10):
            while ("onlysq-mcp", "tools/call chat") not in exported_spans(Collector.received):
                await anyio.sleep(0.05)
    finally:
        stop_http_server(server)
        collector.shutdown()
    assert "Exporting OpenTelemetry traces" in server.log.read_text()


def test_without_the_exporter_tracing_is_off_with_one_warning(monkeypatch, caplog):
    assert configure_tracing({}) is False
    assert not caplog.records
    # As when the `otel` group is not installed.
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk", None)
    with caplog.at_level(logging.WARNING):
        assert configure_tracing({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}) is False
    [warning] = caplog.records
    assert "pip install 'onlysq-mcp[otel]'" in warning.getMessage() and "\n" not in warning.getMessage()
