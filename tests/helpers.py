"""Plain helpers shared by the test modules (fixtures live in conftest.py, which pytest loads by itself).

Test modules import from here, never from conftest.py or from each other.
"""

from __future__ import annotations

import datetime
import http.server
import io
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx2
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from PIL import Image

from onlysq_mcp.upstream import RetryPolicy, Upstream

TEST_KEY = "test-key"
YANDEX_KEY = "yandex-test-key"
YANDEX_IAM = "yandex-test-iam"
YANDEX_FOLDER = "b1gfaketestfolder"

# A raw MCP `initialize` request over HTTP, for tests that speak to the front door without a client.
HTTP_TOKEN = "http-token-for-tests-0123456789"
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}
MCP_HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}


def text_of(result) -> str:
    """The text blocks of a tool result, joined: what a model reads."""
    return "\n".join(block.text for block in result.content if block.type == "text")


async def catalogue_loaded(client) -> None:
    """Wait until the server holds the live model catalogue (`list_models` waits for its fetch).

    Model checks use the live catalogue once it is in, and never wait for it: before, the upstream decides.
    """
    await client.call_tool("list_models", {"search": "?"})


def upstream_env(base_url: str, output_dir: Path, *, yandex: bool = True, **extra: str) -> dict[str, str]:
    env = {
        "ONLYSQ_API_KEY": TEST_KEY,
        "ONLYSQ_BASE_URL": base_url,
        "ONLYSQ_MCP_OUTPUT_DIR": str(output_dir),
        "ONLYSQ_RETRY_BACKOFF": "0.01",
        "ONLYSQ_TIMEOUT": "10",
    }
    if yandex:
        env |= {"YANDEX_API_KEY": YANDEX_KEY, "YANDEX_FOLDER_ID": YANDEX_FOLDER, "YANDEX_BASE_URL": base_url}
    return env | extra


def make_image(fmt: str = "PNG", size: tuple[int, int] = (40, 30), *, noise: bool = False, mode: str = "RGB") -> bytes:
    """Image bytes in `fmt`; `noise` makes them incompressible, so byte budgets really bite."""
    if noise:
        channels = len(mode)
        image = Image.frombytes(mode, size, os.urandom(size[0] * size[1] * channels))
    else:
        image = Image.new(mode, size, (200, 30, 60, 255)[: len(mode)])
    out = io.BytesIO()
    image.save(out, fmt)
    return out.getvalue()


# --- a local web server of test images ------------------------------------------------------------

PNG = make_image("PNG", (50, 40))  # served at /cat.png
BIG_PNG = make_image("PNG", (64, 64), noise=True)  # over the 2048-byte input limit the error tests set


class ImageHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/cat.png":
            self.reply(200, PNG, length=True)
        elif self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/cat.png")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/big-declared.png":
            self.reply(200, BIG_PNG, length=True)
        elif self.path == "/big-streamed.png":
            self.reply(200, BIG_PNG, length=False)
        elif self.path == "/slow.png":
            time.sleep(1.0)
            self.reply(200, PNG, length=True)
        else:
            self.reply(404, b"not here", length=True)

    def reply(self, status: int, body: bytes, *, length: bool) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", "image/png")
            if length:
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass  # the client gave up first (the timeout test)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def image_web_server() -> Iterator[str]:
    """A tiny web server on 127.0.0.1 serving the images above; yields its base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), ImageHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


# --- server processes, as hosts start them -------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_command() -> list[str]:
    """The installed console script, as a host launches it."""
    script = shutil.which("onlysq-mcp", path=str(Path(sys.executable).parent)) or shutil.which("onlysq-mcp")
    assert script, "onlysq-mcp is not installed: run pip install -e '.[test]'"
    return [script]


def clean_env(**env: str) -> dict[str, str]:
    # ONLYSQ_MCP_FAST_START passes through: `ONLYSQ_MCP_FAST_START=false pytest` runs every stdio test
    # without the front door.
    base = {
        k: v for k, v in os.environ.items() if k == "ONLYSQ_MCP_FAST_START" or not k.startswith(("ONLYSQ_", "YANDEX_"))
    }
    return base | env


class HttpServer:
    def __init__(self, process: subprocess.Popen[bytes], port: int, log: Path, host: str = "127.0.0.1") -> None:
        self.process = process
        self.port = port
        self.log = log
        self.host = host

    @property
    def url(self) -> str:
        name = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{name}:{self.port}/mcp"


def start_http_server(env: dict[str, str], tmp_path: Path, *args: str, host: str = "127.0.0.1") -> HttpServer:
    """`onlysq-mcp --transport http` on a free port of `host` (an IPv6 address without brackets)."""
    port = free_port()
    log = tmp_path / f"http-server-{port}.log"
    process = subprocess.Popen(
        [*server_command(), "--transport", "http", "--host", host, "--port", str(port), *args],
        env=clean_env(**env),
        cwd=str(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"HTTP server exited early:\n{log.read_text()}")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return HttpServer(process, port, log, host)
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"HTTP server did not start:\n{log.read_text()}")


def stop_http_server(server: HttpServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


def make_upstream(handler=None, **overrides) -> Upstream:
    """An `Upstream` answering through `handler` (an httpx2 MockTransport handler), no network."""
    transport = httpx2.MockTransport(handler or (lambda request: httpx2.Response(200, json={})))
    client = httpx2.AsyncClient(transport=transport)

    async def shared() -> httpx2.AsyncClient:
        return client

    options = {
        "name": "X",
        "client": shared,
        "base_url": "http://upstream.test",
        "policy": RetryPolicy(0, 0, 10),
        "read_timeout": 7,
        "auth_hint": "",
        "max_body_bytes": 10_000,
        "max_image_bytes": 3_000,
    }
    return Upstream(**options | overrides)


def self_signed_server(folder: Path, name: x509.GeneralName) -> tuple[ssl.SSLContext, Path]:
    """A TLS server context with a certificate for `name` that signs itself (a CA of its own), and the
    certificate's file, for a client that should trust it."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, str(name.value))])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([name]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return context, cert_file
