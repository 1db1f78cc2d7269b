"""A local fake of the upstream HTTP APIs: the OnlySq AI API and Yandex AI Studio image generation.

It is a real HTTP server (uvicorn, h11) bound to 127.0.0.1 and run in a background thread with its own
event loop, so synchronous code, subprocesses and async tests can all talk to it over a socket. The
wire formats follow the providers' own documentation: OnlySq's API docs (API2.0 `POST /ai/v2`, ImaGen
`POST /ai/imagen`, `GET /ai/models`; the model page is committed as scripts/onlysq_models_page.txt) and
Yandex AI Studio's `POST /v1/images/generations` and `POST /v1/chat/completions` (the `yandex-cloud/docs`
repository: the images API reference, `openai-compatibility.md`, `concepts/generation/models.md`); where those are
silent, what public clients of the services do.

    fake = FakeUpstream()
    fake.start()
    fake.add_fault("/ai/v2", "status", status=429, retry_after="1")
    ...
    fake.stop()

Standalone, for benchmarks and manual runs: `python tests/fake_upstream.py --port 8765`.

Every request is recorded (`fake.requests`). Knobs are plain attributes read on each request; `reset()`
restores them. Faults are queued per path with `add_fault()` and consumed FIFO, one per request.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import copy
import hashlib
import io
import json
import math
import os
import random
import re
import secrets
import signal
import socket
import string
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any, Final

import anyio
import anyio.abc
import uvicorn
from PIL import Image, ImageDraw
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = [
    "CHAT_PATH",
    "FAULT_KINDS",
    "IMAGEN_PATH",
    "IMAGEN_RATIOS",
    "MODELS_PATH",
    "RECORDED_DIR",
    "YANDEX_CHAT_PATH",
    "YANDEX_IMAGES_PATH",
    "FakeUpstream",
    "Fault",
    "RecordedRequest",
    "default_models",
]

CHAT_PATH: Final = "/ai/v2"
IMAGEN_PATH: Final = "/ai/imagen"
MODELS_PATH: Final = "/ai/models"
YANDEX_IMAGES_PATH: Final = "/v1/images/generations"
YANDEX_CHAT_PATH: Final = "/v1/chat/completions"
YANDEX_PATHS: Final = frozenset({YANDEX_IMAGES_PATH, YANDEX_CHAT_PATH})
IMAGE_PATHS: Final = frozenset({IMAGEN_PATH, YANDEX_IMAGES_PATH})

IMAGEN_RATIOS: Final = ("1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "3:4", "4:3", "9:16", "9:21")
CHAT_ROLES: Final = frozenset({"system", "user", "assistant"})

FAULT_KINDS: Final = frozenset(
    {
        "status",
        "malformed",
        "html",
        "missing_field",
        "error_body",
        "finish_error",
        "bad_base64",
        "not_image",
        "bomb",
        "cut_stream",
        "abort_stream",
        "stream_error",
        "bare_lines",
        "newline_events",
        "plain_sse",
        "crlf_events",
        "pretty_json",
        "stall",
        "delay",
        "hold",
        "drop",
        "bad_gzip",
        "huge",
        # Issue 12 point 10: real bodies, and the lenient base64 public clients accept.
        "recorded",
        "base64_variant",
        "empty_files",
        "empty_models",
    }
)
# Kinds that only make sense for some endpoints; add_fault rejects the others so a typo in a test
# fails loudly instead of silently testing nothing.
_KIND_PATHS: Final[dict[str, frozenset[str]]] = {
    "missing_field": frozenset({CHAT_PATH, IMAGEN_PATH, YANDEX_IMAGES_PATH, YANDEX_CHAT_PATH, MODELS_PATH}),
    "error_body": frozenset({CHAT_PATH, IMAGEN_PATH, YANDEX_IMAGES_PATH, YANDEX_CHAT_PATH}),
    "finish_error": frozenset({CHAT_PATH, YANDEX_CHAT_PATH}),
    "cut_stream": frozenset({CHAT_PATH, YANDEX_CHAT_PATH}),
    "abort_stream": frozenset({CHAT_PATH, YANDEX_CHAT_PATH}),
    "bare_lines": frozenset({CHAT_PATH, YANDEX_CHAT_PATH}),
    "newline_events": frozenset({CHAT_PATH, YANDEX_CHAT_PATH}),
    "plain_sse": frozenset({CHAT_PATH, YANDEX_CHAT_PATH}),
    "crlf_events": frozenset({CHAT_PATH, YANDEX_CHAT_PATH}),
    "pretty_json": frozenset({CHAT_PATH, YANDEX_CHAT_PATH}),
    "stream_error": frozenset({CHAT_PATH, YANDEX_CHAT_PATH}),
    "bad_base64": frozenset({IMAGEN_PATH, YANDEX_IMAGES_PATH}),
    "not_image": frozenset({IMAGEN_PATH, YANDEX_IMAGES_PATH}),
    "bomb": frozenset({IMAGEN_PATH, YANDEX_IMAGES_PATH}),
    "base64_variant": frozenset({IMAGEN_PATH, YANDEX_IMAGES_PATH}),
    "empty_files": frozenset({IMAGEN_PATH}),
    "empty_models": frozenset({MODELS_PATH}),
}

# How a chat stream is framed on the wire, by fault kind: content type, what goes before each JSON payload and
# what after it. The default is OpenAI's reference framing; the others are what OnlySq's own sample client
# for /ai/v2 would read as well (raw lines, `data: ` stripped only when present, content type ignored), and
# what the WHATWG event-stream grammar allows (any of CRLF, LF, CR; `data:` without its space).
STREAM_FRAMINGS: Final[dict[str | None, tuple[str, bytes, bytes]]] = {
    None: ("text/event-stream; charset=utf-8", b"data: ", b"\n\n"),
    "bare_lines": ("text/event-stream; charset=utf-8", b"", b"\n"),
    "newline_events": ("text/event-stream; charset=utf-8", b"data: ", b"\n"),
    "plain_sse": ("text/plain; charset=utf-8", b"data: ", b"\n\n"),
    "crlf_events": ("text/event-stream", b": keep-alive\r\nevent: message\r\ndata:", b"\r\n\r\n"),
}
MALFORMED_BODY: Final = b'{"choices": ['
NOT_GZIP_BODY: Final = b"this body claims to be gzip but is not"
HUGE_PIECE: Final = 64 * 1024
BAD_BASE64: Final = "not*base64!!"
NOT_IMAGE_BYTES: Final = b"hello world"
# Gemini bills a fixed number of tokens per image; the fake mimics that so usage grows with images.
_TOKENS_PER_IMAGE: Final = 258

_YANDEX_GRPC_CODES: Final[dict[int, int]] = {
    400: 3,  # INVALID_ARGUMENT
    401: 16,  # UNAUTHENTICATED
    403: 7,  # PERMISSION_DENIED
    404: 5,  # NOT_FOUND
    429: 8,  # RESOURCE_EXHAUSTED
    500: 13,  # INTERNAL
    503: 14,  # UNAVAILABLE
    504: 4,  # DEADLINE_EXCEEDED
}
_YANDEX_MODEL_URI: Final = re.compile(r"^art://([^/]+)/([^/]+)(?:/([^/]+))?$")
# gpt://<folder>/<model>[/<branch>]; without a branch Yandex takes `latest` (concepts/generation/models.md).
_YANDEX_CHAT_URI: Final = re.compile(r"^gpt://([^/]+)/([^/]+)(?:/(latest|rc|deprecated))?$")
_YANDEX_SIZE: Final = re.compile(r"^(\d+)x(\d+)$")
# OnlySq answers 429 "provider queue" when too many generations are queued (a public client tells users to cut
# parallel image requests to 1 when it repeats); the exact wording is not known, only those words.
QUEUE_FULL_MESSAGE: Final = "Too many requests: the provider queue is full, try again later"
# The live limit of Alice AI ART, with the live error text (seen by public clients); the reference says 32k.
_YANDEX_PROMPT_LIMIT: Final = 500

# Bodies the providers' documents show, served verbatim by the "recorded" fault; tests/recorded/README.md
# names the source of each. The content type follows the file's suffix.
RECORDED_DIR: Final = Path(__file__).parent / "recorded"
RECORDED_TYPES: Final = {".json": "application/json", ".sse": "text/event-stream"}
# How public clients' lenient decoding (`base64.b64decode` without validation, upstreams.md) is exercised:
# each variant of a correct base64 image that a strict decoder refuses.
BASE64_VARIANTS: Final = frozenset({"wrapped", "data_uri", "url_safe", "unpadded"})

# A private scope key through which the h11 protocol below hands its transport to the app ("drop").
_TRANSPORT_KEY: Final = "fake_upstream.transport"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def default_models() -> dict[str, Any]:
    """The default `/ai/models` catalogue, shaped like the live one (a dict keyed by model id): models the docs
    never list (`gpt-5.2-chat`, `flux-2-dev`, `stable-diffusion-xl-base-1.0`), the embedding model
    `e5-mistral-7b` among the text models as the docs list it, `beta` and `work` statuses, tiers 0 to 2."""

    def entry(
        name: str,
        description: str,
        modality: str,
        owner: str,
        *,
        status: str = "work",
        tier: int = 0,
        can_stream: bool = True,
        can_tools: bool = False,
        can_think: bool = False,
    ) -> dict[str, Any]:
        return {
            "name": name,
            "description": description,
            "modality": modality,
            "tier": tier,
            "status": status,
            "can-stream": can_stream,
            "can-tools": can_tools,
            "can-think": can_think,
            "cost": 0,
            "owner": owner,
        }

    return {
        "gpt-4o-mini": entry(
            "GPT-4o mini",
            "A small model with superior textual intelligence and multimodal reasoning",
            "text",
            "openai",
            can_tools=True,
        ),
        "gpt-4o": entry(
            "GPT-4o",
            'GPT-4o ("o" for "omni") is a step towards much more natural human-computer interaction',
            "text",
            "openai",
            can_tools=True,
        ),
        "gemini-2.5-flash": entry(
            "Gemini 2.5 Flash",
            "A fast and efficient version of Google's Gemini model, optimized for real-time, low-latency "
            "tasks while maintaining strong multi-modal understanding.",
            "text",
            "google",
            can_tools=True,
        ),
        "gemini-2.0-flash": entry(
            "Gemini 2.0 Flash",
            "A fast, efficient model optimized for quick responses and cost-effective tasks while "
            "maintaining strong performance.",
            "text",
            "google",
            can_tools=True,
        ),
        "gpt-5.2-chat": entry(
            "GPT-5.2 Chat", "Listed live, not in the docs.", "text", "openai", tier=2, can_tools=True
        ),
        # The docs list it with modality Text; it makes embeddings, not replies.
        "e5-mistral-7b": entry(
            "E5 Mistral 7B",
            "E5-Mistral-7B is a 7-billion-parameter model optimized for embeddings and semantic understanding "
            "while still supporting general text tasks.",
            "text",
            "intfloat",
            can_stream=False,
        ),
        "deepseek-v3": entry(
            "DeepSeek V3",
            "Deepseek-V3 is an advanced AI model by Deepseek, excelling in reasoning, code generation, "
            "and multi-step problem-solving.",
            "text",
            "deepseek",
            status="beta",
        ),
        "flux": entry(
            "FLUX",
            "Flux is a 12 billion parameter rectified flow transformer capable of generating images "
            "from text descriptions.",
            "image",
            "black-forest-labs",
            can_stream=False,
        ),
        "flux-2-dev": entry(
            "FLUX.2 dev",
            "The second generation of FLUX, open-weights development release.",
            "image",
            "black-forest-labs",
            tier=1,
            can_stream=False,
        ),
        "stable-diffusion-xl-base-1.0": entry(
            "Stable Diffusion XL", "Listed live, not in the docs.", "image", "stabilityai", can_stream=False
        ),
        "gtts": entry(
            "gTTS",
            "gTTS (Google Text-to-Speech) generates natural-sounding speech audio from text in multiple languages.",
            "sound",
            "google",
            can_stream=False,
        ),
        # Present only in the fake's live answer, so tests can tell a fetched catalogue from a bundled one.
        "fake-live-only": entry(
            "Fake live-only model",
            "Exists only in the fake upstream's /ai/models answer.",
            "text",
            "fake",
        ),
    }


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the fake received it."""

    method: str
    path: str
    query: str
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    body: bytes
    json: Any  # the parsed body, or None when it is empty or not JSON
    time: float  # time.time() on arrival
    client: tuple[str, int] | None = None  # the client's address and port: one per connection


@dataclass(frozen=True)
class Fault:
    """A queued misbehaviour for one request; see `FakeUpstream.add_fault`."""

    kind: str
    status: int | None = None
    retry_after: str | None = None
    message: str | None = None
    delay: float = 0.0
    after_chunks: int = 1
    size: int = 0


class _HTTPError(Exception):
    """A validation failure; the dispatcher renders it in the endpoint's own error style."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class _SeenImage:
    width: int
    height: int
    mime: str
    size: int


class _DroppableH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, exposing the connection's transport to the app.

    ASGI has no way to close a connection without answering (uvicorn turns "no response" into a 500),
    and the "drop" fault needs exactly that.
    """

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        inner = self.app

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            scope[_TRANSPORT_KEY] = transport
            await inner(scope, receive, send)

        self.app = app


class FakeUpstream:
    """Fake OnlySq + Yandex AI Studio server.

    Endpoints: GET /ai/models, POST /ai/v2 (chat, vision, SSE streaming), POST /ai/imagen,
    POST /v1/images/generations and POST /v1/chat/completions (Yandex). Knobs are the annotated attributes below; tests may set them at any
    time, and each request reads them afresh. Faults: see `add_fault`.
    """

    # Knobs; `reset()` restores these defaults.
    latency: float
    api_keys: set[str]
    # Entries may be anything, to imitate odd live ones: `None`, a list where text belongs, an unknown status.
    models: dict[str, Any]
    api_version: str
    chat_reply: str | None
    stream_piece_chars: int
    stream_chunk_delay: float
    imagen_format: str
    image_long_side: int
    image_noise: bool
    omit_size: bool
    yandex_api_keys: set[str]
    yandex_iam_tokens: set[str]
    yandex_folder: str
    yandex_models: set[str]
    yandex_retired_models: set[str]
    yandex_chat_models: set[str]
    yandex_format: str
    image_queue_limit: int | None

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._faults: dict[str, deque[Fault]] = {}
        self._in_flight = 0
        self._max_in_flight = 0
        self._image_in_flight = 0
        self._image_arrivals: list[int] = []
        self._disconnects = 0
        self._thread: threading.Thread | None = None
        self._server: uvicorn.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        # Opened by `release()`; requests held by a "hold" fault wait for it.
        self._release = threading.Event()
        self._set_defaults()

    def _set_defaults(self) -> None:
        self.latency = 0.0
        self.api_keys = {"openai", "test-key"}
        self.models = default_models()
        self.api_version = "fake-1"
        self.chat_reply = None
        self.stream_piece_chars = 4
        self.stream_chunk_delay = 0.0
        self.imagen_format = "PNG"
        self.image_long_side = 64
        self.image_noise = False
        self.omit_size = False
        self.yandex_api_keys = {"yandex-test-key"}
        self.yandex_iam_tokens = {"yandex-test-iam"}
        self.yandex_folder = "b1gfaketestfolder"
        self.yandex_models = {"aliceai-image-art-3.0"}
        # Retired models answer 403 / code 7 with valid keys (seen live for YandexART).
        self.yandex_retired_models = {"yandex-art"}
        self.yandex_chat_models = {"aliceai-llm", "yandexgpt", "yandexgpt-lite"}
        self.yandex_format = "JPEG"
        # Image requests (both image endpoints) that may be in flight at once; one arriving beyond it is answered
        # 429 with QUEUE_FULL_MESSAGE, like OnlySq's full provider queue. None: no limit.
        self.image_queue_limit = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        """Serve in a background thread; return once the port accepts connections."""
        if self._thread is not None:
            raise RuntimeError("FakeUpstream is already running")
        # Binding here, not in uvicorn, makes the port (and base_url) known before the thread starts.
        # An explicit IPPROTO_TCP makes asyncio set TCP_NODELAY on accepted sockets (it checks `sock.proto`);
        # without it Nagle + delayed ACK add ~40 ms to every request on a kept-alive connection.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self._asgi,
            http=_DroppableH11Protocol,
            interface="asgi3",
            ws="none",
            lifespan="off",
            log_config=None,
            log_level="warning",
            access_log=False,
            proxy_headers=False,
            server_header=False,
            # In-flight stalls are woken by `stop()`; this only bounds a stuck client.
            timeout_graceful_shutdown=2,
        )
        server = uvicorn.Server(config)
        self._server = server

        async def serve() -> None:
            self._loop = asyncio.get_running_loop()
            self._stopping = asyncio.Event()
            await server.serve(sockets=[sock])

        self._thread = threading.Thread(target=asyncio.run, args=(serve(),), name="fake-upstream", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self._thread = self._server = None
                sock.close()
                raise RuntimeError("FakeUpstream failed to start")
            time.sleep(0.005)

    def stop(self) -> None:
        thread, server, loop, stopping = self._thread, self._server, self._loop, self._stopping
        if thread is None or server is None:
            return
        if loop is not None and stopping is not None:
            loop.call_soon_threadsafe(stopping.set)
        server.should_exit = True
        thread.join(timeout=5)
        if thread.is_alive():
            server.force_exit = True
            thread.join(timeout=5)
        self._thread = self._server = None
        self._loop = None
        self._stopping = None

    def __enter__(self) -> FakeUpstream:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def reset(self) -> None:
        """Restore every knob, clear recorded requests, queued faults and in-flight statistics, release held ones."""
        self._set_defaults()
        self.release()
        with self._lock:
            self._requests.clear()
            self._faults.clear()
            self._max_in_flight = 0
            self._image_arrivals.clear()
            self._disconnects = 0

    # ------------------------------------------------------------------ test-facing API

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every request received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def requests_to(self, path: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path == path]

    @property
    def in_flight(self) -> int:
        """Requests being handled right now."""
        with self._lock:
            return self._in_flight

    @property
    def disconnects(self) -> int:
        """Requests whose client went away before the answer was complete."""
        with self._lock:
            return self._disconnects

    @property
    def max_in_flight(self) -> int:
        """Most requests being handled at once since start or `reset()` (for concurrency-limit tests)."""
        with self._lock:
            return self._max_in_flight

    @property
    def image_arrivals(self) -> list[int]:
        """For each image request so far, oldest first: how many image requests were in flight as it arrived,
        itself included (1 = it had the upstream to itself)."""
        with self._lock:
            return list(self._image_arrivals)

    def add_fault(
        self,
        path: str,
        kind: str,
        *,
        times: int = 1,
        status: int | None = None,
        retry_after: str | None = None,
        message: str | None = None,
        delay: float = 0.0,
        after_chunks: int = 1,
        size: int = 300_000_000,
    ) -> None:
        """Make the next `times` requests to `path` misbehave; faults are consumed FIFO per path.

        A fault is taken when a request arrives (it is recorded as usual), whatever the request holds.
        The first group below answers before any validation; the second only changes a successful answer,
        so a request that fails validation (bad key, bad body) still gets its normal 4xx and uses the fault.

        - "status": `status` (default 500) with `{"error": {"message": message or the status phrase}}`
          (Yandex-shaped on the Yandex paths) and `Retry-After: retry_after` when given.
        - "html": `status` (default 200) with an nginx-style HTML page, content-type text/html.
        - "malformed": 200, content-type application/json, body `{"choices": [`.
        - "delay": sleep `delay` seconds, then answer normally.
        - "hold": wait until `release()` is called (at most `delay` seconds, default 30), then answer normally:
          for tests that need a request to outlast steps of their own, whatever the machine's speed.
        - "drop": abort the TCP connection without a byte of response.
        - "bad_gzip": 200 with `content-encoding: gzip` and a body that is not gzip (an event stream for a
          streamed chat request, JSON otherwise).
        - "huge": 200 with a body of `size` bytes (default 300 MB) generated as it is sent, never held in
          memory: for a streamed chat request, content events; otherwise JSON whose one string never ends.
          Stops when the client goes away.
        ---
        - "error_body": 200 JSON `{"error": {"message": message}}` (also to a streamed request).
        - "missing_field": 200 JSON without `choices` (/ai/v2; for a stream every chunk lacks it),
          `files` (/ai/imagen), `data` (Yandex) or `models` (/ai/models); with `message`, the body also
          has a key of that name (an unexpected key, which the error lists).
        - "finish_error" (/ai/v2): `finish_reason` "error" and content "" (non-stream); for a stream the
          content chunks are sent, then a final chunk with finish_reason "error", then `[DONE]`.
        - "bad_base64" / "not_image" (image endpoints): the image is "not*base64!!" / base64 of b"hello world".
        - "bomb" (image endpoints): the image is a 34-byte lossless WebP declaring 13,300×13,300 pixels
          (`tests/image_bombs.py`).
        - "cut_stream" (/ai/v2): a stream ends cleanly after `after_chunks` content chunks, with no finish
          chunk and no `[DONE]` (with `after_chunks` past the reply's chunks: all the text, then a clean end
          without an end marker); a non-streamed answer sends its headers and half its body, then aborts.
        - "abort_stream" (/ai/v2): a stream's connection is aborted after `after_chunks` content chunks (a
          network cut); a non-streamed answer as with "cut_stream".
        - "bare_lines", "newline_events", "plain_sse", "crlf_events" (/ai/v2): a stream framed otherwise
          (`STREAM_FRAMINGS`): bare JSON lines and a bare `[DONE]`; `data:` lines with single newlines between
          them; normal events labelled text/plain; CRLF line ends, a comment and an `event:` field, `data:`
          without its space. A non-streamed answer is as usual.
        - "pretty_json" (/ai/v2): the answer, streamed request or not, is one pretty-printed JSON body labelled
          text/plain: the `chat.completion`, or with `message` `{"error": {"message": message}}`.
        - "stream_error" (/ai/v2): after `after_chunks` chunks, `data: {"error": {"message": ...}}` and the
          stream ends (no `[DONE]`); a non-streamed request gets a 200 whose JSON is that error object.
        - "empty_models" (/ai/models): the list is `{}`, while the models stay served (an empty live list).
        - "stall": headers (and for a stream `after_chunks` chunks) go out, then `delay` seconds of silence,
          then the rest as normal.
        - "recorded" (before validation): `status` (default 200) with the file `message` of tests/recorded/
          sent byte for byte, content type by its suffix (.json, .sse), whatever the request asked.
        - "base64_variant" (image endpoints): the image's base64 as `message` says: "wrapped" (76-character
          lines), "data_uri" (`data:image/<format>;base64,` prefix), "url_safe" (`-_` alphabet), "unpadded".
        - "empty_files" (/ai/imagen): `files` is `[]`; with `message`, the body also has
          `{"error": {"message": message}}`, as public clients report of the live service.
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {sorted(FAULT_KINDS)}")
        allowed = _KIND_PATHS.get(kind)
        if allowed is not None and path not in allowed:
            raise ValueError(f"fault {kind!r} does not apply to {path!r} (only {sorted(allowed)})")
        if times < 1:
            raise ValueError("times must be >= 1")
        _check_fault_message(kind, message)
        fault = Fault(kind, status, retry_after, message, delay, after_chunks, size)
        with self._lock:
            self._faults.setdefault(path, deque()).extend([fault] * times)

    def pending_faults(self, path: str) -> int:
        with self._lock:
            return len(self._faults.get(path, ()))

    # ------------------------------------------------------------------ ASGI plumbing

    async def _asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = await _read_body(receive)
        path: str = scope["path"]
        headers: dict[str, str] = {}
        for raw_name, raw_value in scope["headers"]:
            name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        try:
            parsed = json.loads(body) if body else None
        except (ValueError, UnicodeDecodeError):
            parsed = None
        record = RecordedRequest(
            method=scope["method"],
            path=path,
            query=scope.get("query_string", b"").decode("latin-1"),
            headers=headers,
            body=body,
            json=parsed,
            time=time.time(),
            client=tuple(scope["client"]) if scope.get("client") else None,
        )
        image = path in IMAGE_PATHS
        with self._lock:
            self._requests.append(record)
            queue = self._faults.get(path)
            fault = queue.popleft() if queue else None
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
            if image:
                self._image_in_flight += 1
                self._image_arrivals.append(self._image_in_flight)
                limit = self.image_queue_limit
                if fault is None and limit is not None and self._image_in_flight > limit:
                    fault = Fault("status", 429, message=QUEUE_FULL_MESSAGE)
        exchange = _Exchange(self, scope, send, record, fault, image=image)

        async def answer(group: anyio.abc.TaskGroup) -> None:
            try:
                await self._sleep(self.latency)
                await self._dispatch(exchange)
            except _HTTPError as err:
                await exchange.send_error(err.status, err.message)
            group.cancel_scope.cancel()

        async def watch_disconnect(group: anyio.abc.TaskGroup) -> None:
            # Like a real upstream, stop generating once the client has gone away.
            while (await receive())["type"] != "http.disconnect":
                pass
            if not exchange.complete:
                with self._lock:
                    self._disconnects += 1
                group.cancel_scope.cancel()

        try:
            async with anyio.create_task_group() as group:
                group.start_soon(answer, group)
                group.start_soon(watch_disconnect, group)
        finally:
            exchange.finish()

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake early when the server stops so shutdown never waits for a stall."""
        if seconds <= 0:
            return
        stopping = self._stopping
        if stopping is None:
            await asyncio.sleep(seconds)
            return
        waiter = asyncio.ensure_future(stopping.wait())
        try:
            await asyncio.wait({waiter}, timeout=seconds)
        finally:
            waiter.cancel()

    async def _hold(self, limit: float) -> None:
        gate = self._release
        deadline = time.monotonic() + limit
        while not gate.is_set() and time.monotonic() < deadline:
            if self._stopping is not None and self._stopping.is_set():
                return
            await asyncio.sleep(0.02)

    def release(self) -> None:
        """Let the requests held by "hold" faults answer; later ones are held again until the next call."""
        gate, self._release = self._release, threading.Event()
        gate.set()

    async def _dispatch(self, ex: _Exchange) -> None:
        fault = ex.fault
        if fault is not None:
            if fault.kind == "drop":
                await ex.drop()
                return
            if fault.kind == "delay":
                await self._sleep(fault.delay)
            elif fault.kind == "hold":
                await self._hold(fault.delay or 30.0)
            elif fault.kind == "status":
                status = fault.status or 500
                extra = [("retry-after", fault.retry_after)] if fault.retry_after is not None else []
                await ex.send_error(status, fault.message or _phrase(status), extra)
                return
            elif fault.kind == "html":
                await ex.send_html(fault.status or 200, fault.message)
                return
            elif fault.kind == "error_body":
                # HTTP 200 with the error in the body, even to a streamed request: public clients of the live
                # OnlySq API (bots, CLIs) check for exactly this shape, `{"error": {"message": ...}}`.
                await ex.send_raw(
                    200,
                    json.dumps({"error": {"message": fault.message or "provider failed"}}).encode(),
                    "application/json",
                )
                return
            elif fault.kind == "recorded":
                name = fault.message or ""
                body = (RECORDED_DIR / name).read_bytes()
                await ex.send_raw(fault.status or 200, body, RECORDED_TYPES[Path(name).suffix])
                return
            elif fault.kind == "malformed":
                await ex.send_raw(200, MALFORMED_BODY, "application/json")
                return
            elif fault.kind == "bad_gzip":
                await ex.send_raw(200, NOT_GZIP_BODY, ex.content_type(), [("content-encoding", "gzip")])
                return
            elif fault.kind == "huge":
                await ex.send_huge(fault.size)
                return
        method, path = ex.record.method, ex.record.path
        routes: dict[str, tuple[str, Callable[[_Exchange], Awaitable[None]]]] = {
            CHAT_PATH: ("POST", self._chat),
            IMAGEN_PATH: ("POST", self._imagen),
            MODELS_PATH: ("GET", self._models),
            YANDEX_IMAGES_PATH: ("POST", self._yandex_images),
            YANDEX_CHAT_PATH: ("POST", self._yandex_chat),
        }
        route = routes.get(path)
        if route is None:
            raise _HTTPError(404, "Not Found")
        if method != route[0]:
            raise _HTTPError(405, "Method Not Allowed")
        await route[1](ex)

    # ------------------------------------------------------------------ OnlySq

    def _require_onlysq_key(self, ex: _Exchange) -> None:
        scheme, _, key = ex.record.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or key.strip() not in self.api_keys:
            raise _HTTPError(401, "Invalid API key")

    async def _models(self, ex: _Exchange) -> None:
        models = {} if ex.fault_kind == "empty_models" else copy.deepcopy(self.models)
        payload: dict[str, Any] = {"api-version": self.api_version, "models": models}
        ex.missing_field(payload, "models")
        await ex.send_json(200, payload)

    async def _chat(self, ex: _Exchange) -> None:
        self._require_onlysq_key(ex)
        body = ex.json_object()
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise _HTTPError(400, "Field 'model' is required")
        request = body.get("request")
        if not isinstance(request, dict):
            raise _HTTPError(400, "Field 'request' is required")
        info = self.models.get(model)
        if not isinstance(info, dict):  # an odd entry (`null`, a list) lists nothing usable
            raise _HTTPError(400, f"Model '{model}' not found")
        if info.get("modality") != "text":
            raise _HTTPError(400, f"Model '{model}' does not support chat")
        await self._answer_chat(ex, model, request, "request.")

    async def _answer_chat(self, ex: _Exchange, model: str, request: dict[str, Any], prefix: str) -> None:
        """Validate an OpenAI-style chat request (`prefix`: where its fields sit, for the error texts) and answer it."""
        messages = request.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _HTTPError(400, f"Field '{prefix}messages' must be a non-empty list")
        stream = request.get("stream", False)
        if not isinstance(stream, bool):
            raise _HTTPError(400, f"Field '{prefix}stream' must be a boolean")
        temperature = request.get("temperature")
        if temperature is not None and (
            isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 <= temperature <= 2
        ):
            raise _HTTPError(400, f"Field '{prefix}temperature' must be a number between 0 and 2")
        max_tokens = request.get("max_tokens")
        if max_tokens is not None and (
            isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1
        ):
            raise _HTTPError(400, f"Field '{prefix}max_tokens' must be a positive integer")

        prompt_tokens = 0
        last_user: tuple[str, list[_SeenImage]] | None = None
        for index, message in enumerate(messages):
            role, text, images = _parse_message(index, message, model)
            prompt_tokens += _count_tokens(text) + _TOKENS_PER_IMAGE * len(images)
            if role == "user":
                last_user = (text, images)

        if self.chat_reply is not None:
            reply = self.chat_reply
        elif last_user is not None and last_user[1]:
            seen = " ".join(
                f"I see a {img.width}x{img.height} {img.mime} image ({img.size} bytes)." for img in last_user[1]
            )
            reply = f"{seen} Question: {last_user[0]}"
        else:
            reply = "Echo: " + (last_user[0] if last_user is not None else "")

        if stream and ex.fault_kind != "pretty_json":
            await self._stream_chat(ex, model, reply, prompt_tokens)
            return

        if ex.fault_kind == "stream_error":
            # A non-streamed request cannot be cut mid-stream; the closest thing is a 200 carrying an error.
            await ex.send_json(200, {"error": {"message": ex.fault_message("provider failed")}})
            return
        finish = "stop"
        if ex.fault_kind == "finish_error":
            reply, finish = "", "error"
        completion_tokens = _count_tokens(reply)
        payload: dict[str, Any] = {
            "id": _random_id("chat_"),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": reply, "refusal": None, "annotations": []},
                    "finish_reason": finish,
                }
            ],
            "usage": _usage(prompt_tokens, completion_tokens),
        }
        if ex.record.path == CHAT_PATH:
            payload["user"] = 0
        ex.missing_field(payload, "choices")
        if ex.fault is not None and ex.fault.kind == "pretty_json":
            body = {"error": {"message": ex.fault.message}} if ex.fault.message else payload
            await ex.send_raw(200, json.dumps(body, indent=2, ensure_ascii=False).encode(), "text/plain; charset=utf-8")
            return
        await ex.send_json(200, payload)

    async def _stream_chat(self, ex: _Exchange, model: str, reply: str, prompt_tokens: int) -> None:
        chat_id = _random_id("chatcmpl_")
        created = int(time.time())
        kind = ex.fault_kind
        after = ex.fault.after_chunks if ex.fault is not None else 0
        step = max(1, self.stream_piece_chars)
        pieces = [reply[i : i + step] for i in range(0, len(reply), step)]

        def chunk(delta: dict[str, str], finish: str | None, usage: dict[str, int] | None) -> dict[str, Any]:
            payload: dict[str, Any] = {
                "id": chat_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                "usage": usage,
            }
            ex.missing_field(payload, "choices")
            return payload

        async def checkpoint() -> bool:
            """Apply a mid-stream fault once `after` chunks are out; True means the stream has ended."""
            if kind == "abort_stream":
                await ex.drop()
                return True
            if kind == "stream_error":
                await ex.send_event({"error": {"message": ex.fault_message("provider failed")}})
            if kind in ("cut_stream", "stream_error"):
                await ex.end()
                return True
            if kind == "stall" and ex.fault is not None:
                await self._sleep(ex.fault.delay)
            return False

        await ex.start(200, ex.framing()[0], [("cache-control", "no-cache")])
        for sent, piece in enumerate(pieces):
            if sent == after and await checkpoint():
                return
            if sent:
                await self._sleep(self.stream_chunk_delay)
            await ex.send_event(chunk({"content": piece, "role": "assistant"}, None, None))
        if after >= len(pieces) and await checkpoint():
            return
        await self._sleep(self.stream_chunk_delay if pieces else 0)
        finish = "error" if kind == "finish_error" else "stop"
        usage = _usage(prompt_tokens, _count_tokens(reply))
        await ex.send_event(chunk({}, finish, usage))
        await ex.send_event("[DONE]")
        await ex.end()

    async def _imagen(self, ex: _Exchange) -> None:
        self._require_onlysq_key(ex)
        body = ex.json_object()
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise _HTTPError(400, "Field 'model' is required")
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise _HTTPError(400, "Field 'prompt' is required")
        ratio = body.get("ratio")
        if ratio is None:
            ratio = "1:1"
        if ratio not in IMAGEN_RATIOS:
            raise _HTTPError(400, f"Invalid ratio {ratio!r}; expected one of {', '.join(IMAGEN_RATIOS)}")
        info = self.models.get(model)
        if not isinstance(info, dict):  # an odd entry (`null`, a list) lists nothing usable
            raise _HTTPError(400, f"Model '{model}' not found")
        if info.get("modality") != "image":
            raise _HTTPError(400, f"Model '{model}' is not an image model")
        seed = body.get("seed")
        ratio_w, ratio_h = (int(part) for part in ratio.split(":"))
        width, height = _size_for_ratio(ratio_w, ratio_h, self.image_long_side)
        started = time.perf_counter()
        encoded = await self._render_b64(ex, prompt, seed, width, height, self.imagen_format)
        payload: dict[str, Any] = {
            "id": _random_id("imagen_"),
            "created": int(time.time()),
            "model": model,
            "files": [encoded],
            "ratio": ratio,
            "size": {"width": width, "height": height},
            "elapsed-time": time.perf_counter() - started,
            # OnlySq's ImaGen docs show usage 1311 for 1366x768 in their example response, i.e. pixels // 800.
            "usage": max(1, width * height // 800),
            "user": 0,
        }
        if seed is not None:
            payload["seed"] = seed
        if self.omit_size:
            del payload["size"]
        if ex.fault_kind == "empty_files":
            payload["files"] = []
            if ex.fault is not None and ex.fault.message:
                payload["error"] = {"message": ex.fault.message}
        ex.missing_field(payload, "files")
        await ex.send_json(200, payload)

    async def _render_b64(
        self, ex: _Exchange, prompt: str, seed: object, width: int, height: int, image_format: str
    ) -> str:
        if ex.fault_kind == "bad_base64":
            return BAD_BASE64
        if ex.fault_kind == "not_image":
            return base64.b64encode(NOT_IMAGE_BYTES).decode("ascii")
        if ex.fault_kind == "bomb":
            from tests.image_bombs import webp  # only here: the fake also runs as a script

            return base64.b64encode(webp()).decode("ascii")
        # Off the event loop: a 2048 px noise PNG takes long enough to stall concurrent requests.
        data = await asyncio.to_thread(_render_image, prompt, seed, width, height, image_format, self.image_noise)
        encoded = base64.b64encode(data).decode("ascii")
        if ex.fault_kind == "base64_variant":
            return _base64_variant(encoded, ex.fault_message(""), image_format)
        return encoded

    # ------------------------------------------------------------------ Yandex AI Studio

    def _require_yandex_auth(self, ex: _Exchange) -> None:
        scheme, _, credential = ex.record.headers.get("authorization", "").partition(" ")
        credential = credential.strip()
        authorised = (scheme.lower() == "api-key" and credential in self.yandex_api_keys) or (
            scheme.lower() == "bearer" and credential in self.yandex_iam_tokens
        )
        if not authorised:
            raise _HTTPError(401, "Unknown api key")

    def _require_yandex_folder(self, folder: str) -> None:
        if folder != self.yandex_folder:
            raise _HTTPError(403, f"Permission to [resource-manager.folder {folder}] denied")

    async def _yandex_chat(self, ex: _Exchange) -> None:
        self._require_yandex_auth(ex)
        body = ex.json_object()
        model = body.get("model")
        match = _YANDEX_CHAT_URI.match(model) if isinstance(model, str) else None
        if match is None:
            raise _HTTPError(400, f"Invalid model URI {model!r}; expected gpt://<folder_id>/<model>/<branch>")
        self._require_yandex_folder(match.group(1))
        if match.group(2) not in self.yandex_chat_models:
            raise _HTTPError(404, f"Model {match.group(2)!r} not found")
        await self._answer_chat(ex, model, body, "")

    async def _yandex_images(self, ex: _Exchange) -> None:
        self._require_yandex_auth(ex)
        body = ex.json_object()
        model = body.get("model")
        match = _YANDEX_MODEL_URI.match(model) if isinstance(model, str) else None
        if match is None:
            raise _HTTPError(400, f"Invalid model URI {model!r}; expected art://<folder_id>/<model>")
        folder, name = match.group(1), match.group(2)
        self._require_yandex_folder(folder)
        if name in self.yandex_retired_models:
            raise _HTTPError(403, f"Access to model {model} denied")
        if name not in self.yandex_models:
            raise _HTTPError(400, f"Unknown model {name!r}")
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise _HTTPError(400, "Field 'prompt' is required")
        if len(prompt) > _YANDEX_PROMPT_LIMIT:
            raise _HTTPError(400, f"Prompt positive size {len(prompt)} exceeds limit ({_YANDEX_PROMPT_LIMIT})")
        size = body.get("size")
        if size is None:
            size = "1x1"
        size_match = _YANDEX_SIZE.match(size) if isinstance(size, str) else None
        if size_match is None or int(size_match.group(1)) == 0 or int(size_match.group(2)) == 0:
            raise _HTTPError(400, f"Invalid size {size!r}; expected <width>x<height>, e.g. 16x9")
        # Any WxH is read as an aspect ratio, pixel sizes included.
        width, height = _size_for_ratio(int(size_match.group(1)), int(size_match.group(2)), self.image_long_side)
        encoded = await self._render_b64(ex, prompt, body.get("seed"), width, height, self.yandex_format)
        input_tokens = _count_tokens(prompt)
        payload: dict[str, Any] = {
            "created": int(time.time()),
            "data": [{"b64_json": encoded}],
            "output_format": self.yandex_format.lower(),
            "size": f"{width}x{height}",
            "usage": {"input_tokens": input_tokens, "output_tokens": 1, "total_tokens": input_tokens + 1},
        }
        ex.missing_field(payload, "data")
        await ex.send_json(200, payload)

    # ------------------------------------------------------------------ standalone

    def serve_forever(self) -> None:
        """Serve until SIGINT or SIGTERM, then stop cleanly. For the standalone run; main thread only."""
        if self._thread is None:
            self.start()
        done = threading.Event()

        def on_signal(signum: int, frame: object) -> None:
            done.set()

        # Explicit handlers, because a shell starts background jobs with SIGINT ignored and benchmarks
        # stop the fake with SIGTERM.
        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            while not done.wait(0.5):
                pass
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.stop()


class _Exchange:
    """One request/response, with the send helpers that apply the request's fault."""

    def __init__(
        self,
        fake: FakeUpstream,
        scope: Scope,
        send: Send,
        record: RecordedRequest,
        fault: Fault | None,
        *,
        image: bool = False,
    ) -> None:
        self.fake = fake
        self.image = image
        self.scope = scope
        self._raw_send = send
        self.record = record
        self.fault = fault
        self.complete = False
        self._counted_out = False

    async def _send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            # Marked before the await: the server may report the disconnect of a finished exchange at once.
            self.complete = True
            # No longer in flight once the last byte is handed over: the client may reuse the connection
            # at once, before this task has finished, and must not be counted twice.
            self.finish()
        await self._raw_send(message)

    def finish(self) -> None:
        if not self._counted_out:
            self._counted_out = True
            with self.fake._lock:
                self.fake._in_flight -= 1
                if self.image:
                    self.fake._image_in_flight -= 1

    @property
    def fault_kind(self) -> str | None:
        return self.fault.kind if self.fault is not None else None

    def missing_field(self, payload: dict[str, Any], field: str) -> None:
        """Apply the "missing_field" fault to `payload`, if it is this request's fault."""
        if self.fault is None or self.fault.kind != "missing_field":
            return
        del payload[field]
        if self.fault.message:
            payload[self.fault.message] = True

    def fault_message(self, default: str) -> str:
        return (self.fault.message if self.fault is not None else None) or default

    def wants_stream(self) -> bool:
        body = self.record.json if isinstance(self.record.json, dict) else {}
        # OnlySq nests the OpenAI-style request under `request`; Yandex sends it as the body.
        request = body.get("request") if self.record.path == CHAT_PATH else body
        return (
            self.record.path in (CHAT_PATH, YANDEX_CHAT_PATH)
            and isinstance(request, dict)
            and request.get("stream") is True
        )

    def content_type(self) -> str:
        return "text/event-stream" if self.wants_stream() else "application/json"

    async def send_huge(self, size: int) -> None:
        """`size` bytes made up piece by piece, so a 300 MB answer costs the fake 64 KB of memory."""
        if self.wants_stream():
            event = b'data: {"choices": [{"delta": {"content": "' + b"x" * 200 + b'"}}]}\n\n'
            head, piece = b"", event * (HUGE_PIECE // len(event))
        else:
            head, piece = b'{"model": "fake", "files": ["', b"A" * HUGE_PIECE
        await self.start(200, self.content_type())
        await self.send_body(head)
        sent = len(head)
        while sent < size:
            await self.send_body(piece)
            sent += len(piece)
            # uvicorn's send returns at once once the client is gone: yield, so the disconnect watcher can stop this.
            await asyncio.sleep(0)
        await self.end()

    def json_object(self) -> dict[str, Any]:
        if not isinstance(self.record.json, dict):
            raise _HTTPError(400, "Request body must be a JSON object")
        return self.record.json

    async def start(self, status: int, content_type: str, extra: list[tuple[str, str]] | None = None) -> None:
        headers = [("content-type", content_type), *(extra or [])]
        await self._send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers],
            }
        )

    async def send_body(self, data: bytes) -> None:
        await self._send({"type": "http.response.body", "body": data, "more_body": True})

    async def end(self) -> None:
        await self._send({"type": "http.response.body", "body": b"", "more_body": False})

    def framing(self) -> tuple[str, bytes, bytes]:
        return STREAM_FRAMINGS.get(self.fault_kind, STREAM_FRAMINGS[None])

    async def send_event(self, payload: Any) -> None:
        """One event in this request's framing; `[DONE]` goes as it is, anything else as JSON."""
        _, before, after = self.framing()
        data = b"[DONE]" if payload == "[DONE]" else json.dumps(payload, ensure_ascii=False).encode()
        await self.send_body(before + data + after)

    async def send_raw(
        self, status: int, body: bytes, content_type: str, extra: list[tuple[str, str]] | None = None
    ) -> None:
        await self.start(status, content_type, [("content-length", str(len(body))), *(extra or [])])
        await self._send({"type": "http.response.body", "body": body, "more_body": False})

    async def send_json(self, status: int, payload: Any) -> None:
        """Send a success body, honouring the "stall" and (for non-streams) "cut_stream" faults."""
        body = json.dumps(payload, ensure_ascii=False).encode()
        if self.fault is not None and self.fault.kind in ("stall", "cut_stream", "abort_stream"):
            await self.start(status, "application/json", [("content-length", str(len(body)))])
            if self.fault.kind == "stall":
                await self.fake._sleep(self.fault.delay)
                await self._send({"type": "http.response.body", "body": body, "more_body": False})
                return
            # A truncated body followed by a closed connection: the client sees an incomplete read.
            await self.send_body(body[: len(body) // 2])
            await self.drop()
            return
        await self.send_raw(status, body, "application/json")

    async def send_error(self, status: int, message: str, extra: list[tuple[str, str]] | None = None) -> None:
        error: dict[str, Any] = {"message": message}
        if self.record.path in YANDEX_PATHS:
            error = {
                "grpcCode": _YANDEX_GRPC_CODES.get(status, 2),
                "httpCode": status,
                "message": message,
                "httpStatus": _phrase(status),
            }
        body = json.dumps({"error": error}).encode()
        await self.send_raw(status, body, "application/json", extra)

    async def send_html(self, status: int, message: str | None) -> None:
        title = f"{status} {_phrase(status)}"
        text = message or title
        page = (
            f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
            f"<center><h1>{text}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
        )
        await self.send_raw(status, page.encode(), "text/html")

    async def drop(self) -> None:
        transport = self.scope.get(_TRANSPORT_KEY)
        if transport is None:
            raise RuntimeError("drop needs the fake's own h11 protocol")
        transport.abort()
        # Let uvicorn see connection_lost before the app returns, or it logs a spurious "no response" error.
        for _ in range(3):
            await asyncio.sleep(0)


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _parse_message(index: int, message: object, model: str) -> tuple[str, str, list[_SeenImage]]:
    """Validate one chat message; return (role, text, images)."""
    if not isinstance(message, dict):
        raise _HTTPError(400, f"Message {index} must be an object")
    role = message.get("role")
    if role not in CHAT_ROLES:
        raise _HTTPError(400, f"Invalid role {role!r} in message {index}; expected system, user or assistant")
    content = message.get("content")
    if isinstance(content, str):
        return role, content, []
    if not isinstance(content, list):
        raise _HTTPError(400, f"Message {index} content must be a string or a list of parts")
    texts: list[str] = []
    images: list[_SeenImage] = []
    for part in content:
        part_type = part.get("type") if isinstance(part, dict) else None
        if part_type == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif part_type == "image_url":
            if not model.startswith("gemini"):
                raise _HTTPError(400, f"Model {model} does not support images")
            image_url = part.get("image_url")
            url = image_url.get("url") if isinstance(image_url, dict) else None
            if not isinstance(url, str):
                raise _HTTPError(400, f"Message {index}: image_url.url is required")
            images.append(_decode_data_uri(url))
        else:
            raise _HTTPError(400, f"Message {index}: unsupported content part {part!r:.80}")
    return role, " ".join(texts), images


def _sniff_image(data: bytes) -> str | None:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    return None


def _decode_data_uri(url: str) -> _SeenImage:
    header, comma, payload = url.partition(",")
    if not url.startswith("data:") or not comma or not header.endswith(";base64"):
        raise _HTTPError(400, "Only base64 data URIs (data:<mime>;base64,...) are supported for images")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise _HTTPError(400, "Image data is not valid base64") from None
    mime = _sniff_image(data)
    if mime is None:
        raise _HTTPError(400, "Image data is not a PNG, JPEG, WebP or GIF image")
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except Exception:
        raise _HTTPError(400, "Image data could not be decoded") from None
    return _SeenImage(width, height, mime, len(data))


def _render_image(prompt: str, seed: object, width: int, height: int, image_format: str, noise: bool) -> bytes:
    """Draw an image that depends on prompt and seed, so different requests give different bytes."""
    digest = hashlib.sha256(f"{prompt}\0{seed}".encode()).digest()
    if noise:
        # Random pixels defeat PNG compression, which is the point of the large-image tests.
        count = width * height * 3
        pixels = os.urandom(count) if seed is None else random.Random(digest).randbytes(count)
        image = Image.frombytes("RGB", (width, height), pixels)
    else:
        image = Image.new("RGB", (width, height), (digest[0], digest[1], digest[2]))
        draw = ImageDraw.Draw(image)
        x0, y0 = digest[6] % max(1, width // 2), digest[7] % max(1, height // 2)
        draw.ellipse((x0, y0, x0 + width // 2, y0 + height // 2), fill=(digest[3], digest[4], digest[5]))
        bar = max(1, height // 8)
        accent = (digest[9], digest[10], digest[11])
        draw.rectangle((0, height - bar, width * digest[8] // 255, height - 1), fill=accent)
    out = io.BytesIO()
    fmt = image_format.upper()
    if fmt == "PNG":
        image.save(out, "PNG", compress_level=1 if noise else 6)
    elif fmt in ("JPEG", "JPG"):
        image.save(out, "JPEG", quality=90)
    else:
        image.save(out, fmt)
    return out.getvalue()


def _check_fault_message(kind: str, message: str | None) -> None:
    """A "recorded" file that is not there, or an unknown base64 variant, fails in the test, not at request time."""
    if kind == "recorded":
        name = message or ""
        if Path(name).name != name or Path(name).suffix not in RECORDED_TYPES or not (RECORDED_DIR / name).is_file():
            raise ValueError(f"recorded needs message=<a .json or .sse file in {RECORDED_DIR}>, got {message!r}")
    if kind == "base64_variant" and message not in BASE64_VARIANTS:
        raise ValueError(f"base64_variant needs message= one of {sorted(BASE64_VARIANTS)}, got {message!r}")


def _base64_variant(encoded: str, variant: str, image_format: str) -> str:
    if variant == "wrapped":
        return "\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76))
    if variant == "data_uri":
        return f"data:image/{image_format.lower().replace('jpg', 'jpeg')};base64,{encoded}"
    changed = encoded.translate(str.maketrans("+/", "-_")) if variant == "url_safe" else encoded.rstrip("=")
    if changed == encoded:
        # A variant that changes nothing would let a strict decoder pass the test: fail loudly instead.
        raise _HTTPError(500, f"fake: the {variant} variant changes nothing for this image; use another prompt")
    return changed


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _size_for_ratio(ratio_w: int, ratio_h: int, long_side: int) -> tuple[int, int]:
    if ratio_w >= ratio_h:
        return long_side, max(1, round(long_side * ratio_h / ratio_w))
    return max(1, round(long_side * ratio_w / ratio_h)), long_side


def _count_tokens(text: str) -> int:
    return math.ceil(len(text) / 4)


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _random_id(prefix: str) -> str:
    alphabet = string.ascii_letters + string.digits
    return prefix + "".join(secrets.choice(alphabet) for _ in range(48))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run the fake OnlySq / Yandex AI Studio upstream.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds to wait before every answer")
    parser.add_argument("--image-long-side", type=int, default=64, help="long side of generated images, px")
    parser.add_argument("--image-noise", action="store_true", help="incompressible random-pixel images")
    args = parser.parse_args(argv)
    fake = FakeUpstream(host=args.host, port=args.port)
    fake.latency = args.latency
    fake.image_long_side = args.image_long_side
    fake.image_noise = args.image_noise
    fake.start()
    print(f"fake upstream listening on {fake.base_url} (Ctrl-C or SIGTERM to stop)", flush=True)
    fake.serve_forever()


if __name__ == "__main__":
    main()
