"""Who calls over HTTP: a tokens file of named users and OAuth 2.1 access tokens checked against a JWKS, through a
real server process and a real key server; the principal reaches the log and the SDK's session binding."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx2
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import RSAAlgorithm
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from pydantic import ValidationError

from onlysq_mcp import auth
from onlysq_mcp.auth import token_verifier
from onlysq_mcp.http_app import check_bind
from tests.helpers import (
    INITIALIZE,
    MCP_HEADERS,
    clean_env,
    free_port,
    server_command,
    start_http_server,
    stop_http_server,
    upstream_env,
)

pytestmark = pytest.mark.anyio

ISSUER = "https://issuer.test"
AUDIENCE = "https://mcp.example.test/mcp"
METADATA_URL = "https://mcp.example.test/.well-known/oauth-protected-resource/mcp"
ALICE_TOKEN = "alice-secret-token-0123456789"
BOB_TOKEN = "bob-secret-token-9876543210"
CAROL_TOKEN = "carol-secret-token-5555555555"


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


class KeyServer:
    """A JWKS endpoint in a thread, counting how often it is read."""

    def __init__(self, document: dict[str, Any], delay: float = 0) -> None:
        body = json.dumps(document).encode()
        self.fetches = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.fetches += 1
                time.sleep(delay)
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/jwks.json"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def signing_key() -> rsa.RSAPrivateKey:
    return new_key()


@pytest.fixture(scope="module")
def second_key() -> rsa.RSAPrivateKey:
    """Published without `alg`, as some authorization servers do."""
    return new_key()


@pytest.fixture(scope="module")
def key_server(signing_key, second_key) -> Iterator[KeyServer]:
    public = json.loads(RSAAlgorithm.to_jwk(signing_key.public_key()))
    other = json.loads(RSAAlgorithm.to_jwk(second_key.public_key()))
    server = KeyServer({"keys": [{**public, "kid": "k1", "alg": "RS256", "use": "sig"}, {**other, "kid": "k-any"}]})
    yield server
    server.httpd.shutdown()


@pytest.fixture(scope="module")
def tokens_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tokens") / "tokens"
    bob_hash = hashlib.sha256(BOB_TOKEN.encode()).hexdigest()
    path.write_text(f"# team\n\nalice:{ALICE_TOKEN}\nbob:sha256:{bob_hash}\n")
    return path


@pytest.fixture(scope="module")
def id_server(fake_upstream, key_server, tokens_file, tmp_path_factory):
    folder = tmp_path_factory.mktemp("identity")
    env = upstream_env(
        fake_upstream.base_url,
        folder / "images",
        ONLYSQ_MCP_AUTH_ISSUER=ISSUER,
        ONLYSQ_MCP_AUTH_AUDIENCE=AUDIENCE,
        ONLYSQ_MCP_AUTH_JWKS_URL=key_server.url,
        ONLYSQ_MCP_HTTP_TOKENS_FILE=str(tokens_file),
        ONLYSQ_MCP_LOG_LEVEL="DEBUG",
    )
    server = start_http_server(env, folder)
    yield server
    stop_http_server(server)


def access_token(key: Any, *, kid: str | None = "k1", algorithm: str = "RS256", **claims: Any) -> str:
    now = int(time.time())
    payload = {"iss": ISSUER, "aud": AUDIENCE, "sub": "user-123", "iat": now, "exp": now + 300, **claims}
    headers = {"kid": kid} if kid is not None else None
    return jwt.encode(payload, key, algorithm=algorithm, headers=headers)


async def chat_as(url: str, token: str, prompt: str) -> str:
    http = httpx2.AsyncClient(headers={"authorization": f"Bearer {token}"}, timeout=30)
    async with http, Client(streamable_http_client(url, http_client=http)) as client:
        result = await client.call_tool("chat", {"prompt": prompt})
    return result.content[0].text


async def initialize_status(url: str, token: str) -> httpx2.Response:
    async with httpx2.AsyncClient(timeout=30) as http:
        return await http.post(url, json=INITIALIZE, headers={**MCP_HEADERS, "authorization": f"Bearer {token}"})


async def test_a_valid_access_token_works_and_its_subject_is_logged(id_server, signing_key):
    token = access_token(signing_key)
    assert await chat_as(id_server.url, token, "oauth") == "Echo: oauth"
    log = id_server.log.read_text()
    assert "by user-123" in log
    assert token not in log and token.split(".")[2] not in log


async def test_a_key_without_alg_verifies_any_algorithm_of_its_type(id_server, second_key):
    token = access_token(second_key, kid="k-any", algorithm="PS256", sub="user-ps")
    assert await chat_as(id_server.url, token, "pss") == "Echo: pss"
    assert "by user-ps" in id_server.log.read_text()


@pytest.mark.parametrize(
    "case",
    [
        "wrong_issuer",
        "wrong_audience",
        "expired",
        "not_yet_valid",
        "no_subject",
        "bad_signature",
        "unknown_kid",
        "alg_none",
        "hs256",
        "other_alg_than_the_key_names",
        "key_of_another_type",
    ],
)
async def test_bad_access_tokens_are_refused_with_the_metadata_url(id_server, signing_key, case):
    now = int(time.time())
    token = {
        "wrong_issuer": lambda: access_token(signing_key, iss="https://other.test"),
        "wrong_audience": lambda: access_token(signing_key, aud="https://other.example/mcp"),
        "expired": lambda: access_token(signing_key, iat=now - 600, exp=now - 120),
        "not_yet_valid": lambda: access_token(signing_key, nbf=now + 600),
        "no_subject": lambda: jwt.encode(
            {"iss": ISSUER, "aud": AUDIENCE, "exp": now + 300}, signing_key, "RS256", {"kid": "k1"}
        ),
        "bad_signature": lambda: access_token(new_key()),
        "unknown_kid": lambda: access_token(signing_key, kid="k2"),
        "alg_none": lambda: access_token(None, algorithm="none"),
        "hs256": lambda: access_token("a-shared-secret-of-32-bytes-long!", algorithm="HS256"),
        "other_alg_than_the_key_names": lambda: access_token(signing_key, algorithm="PS256"),
        "key_of_another_type": lambda: access_token(
            ec.generate_private_key(ec.SECP256R1()), kid="k-any", algorithm="ES256"
        ),
    }[case]()
    response = await initialize_status(id_server.url, token)
    assert response.status_code == 401
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("Bearer ")
    assert f'resource_metadata="{METADATA_URL}"' in challenge
    assert 'error="invalid_token"' in challenge
    assert token not in id_server.log.read_text()


async def test_unknown_key_ids_do_not_hammer_the_key_server(id_server, signing_key, key_server):
    await initialize_status(id_server.url, access_token(signing_key))  # keys fetched by now
    before = key_server.fetches
    for number in range(5):
        response = await initialize_status(id_server.url, access_token(signing_key, kid=f"rotated-{number}"))
        assert response.status_code == 401
    assert key_server.fetches - before <= 1


async def test_a_request_without_a_token_is_challenged_without_an_error_code(id_server):
    async with httpx2.AsyncClient(timeout=30) as http:
        response = await http.post(id_server.url, json=INITIALIZE, headers=MCP_HEADERS)
    assert response.status_code == 401
    challenge = response.headers["www-authenticate"]
    assert f'resource_metadata="{METADATA_URL}"' in challenge and "error=" not in challenge


@pytest.mark.parametrize("path", ["/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource"])
async def test_protected_resource_metadata_is_public(id_server, path):
    async with httpx2.AsyncClient(timeout=30) as http:
        response = await http.get(f"http://127.0.0.1:{id_server.port}{path}")
    assert response.status_code == 200
    metadata = response.json()
    assert metadata["resource"] == AUDIENCE
    assert metadata["authorization_servers"] == [ISSUER]


async def test_named_tokens_each_work_and_name_their_user(id_server):
    assert await chat_as(id_server.url, ALICE_TOKEN, "from alice") == "Echo: from alice"
    assert await chat_as(id_server.url, BOB_TOKEN, "from bob") == "Echo: from bob"
    assert (await initialize_status(id_server.url, "carol-guess")).status_code == 401
    # The hash itself is not a token.
    assert (await initialize_status(id_server.url, hashlib.sha256(BOB_TOKEN.encode()).hexdigest())).status_code == 401
    log = id_server.log.read_text()
    assert "by alice" in log and "by bob" in log
    assert ALICE_TOKEN not in log and BOB_TOKEN not in log


async def test_the_tokens_file_is_reread_when_it_changes(id_server, tokens_file):
    assert (await initialize_status(id_server.url, CAROL_TOKEN)).status_code == 401
    original = tokens_file.read_text()
    tokens_file.write_text(original + f"carol:{CAROL_TOKEN}\n")
    try:
        assert await chat_as(id_server.url, CAROL_TOKEN, "from carol") == "Echo: from carol"
    finally:
        tokens_file.write_text(original)
    assert (await initialize_status(id_server.url, CAROL_TOKEN)).status_code == 401


async def test_a_session_belongs_to_the_user_who_opened_it(id_server):
    opened = await initialize_status(id_server.url, ALICE_TOKEN)
    session = opened.headers["mcp-session-id"]
    ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
    headers = {
        **MCP_HEADERS,
        "mcp-session-id": session,
        "mcp-protocol-version": INITIALIZE["params"]["protocolVersion"],
    }
    async with httpx2.AsyncClient(timeout=30) as http:
        as_bob = await http.post(id_server.url, json=ping, headers={**headers, "authorization": f"Bearer {BOB_TOKEN}"})
        as_alice = await http.post(
            id_server.url, json=ping, headers={**headers, "authorization": f"Bearer {ALICE_TOKEN}"}
        )
    assert as_bob.status_code == 404
    assert as_alice.status_code == 200


def test_any_auth_mode_allows_a_public_bind(make_settings, tokens_file, key_server):
    check_bind(make_settings(ONLYSQ_MCP_HTTP_TOKENS_FILE=tokens_file), "0.0.0.0", False)
    oauth = {
        "ONLYSQ_MCP_AUTH_ISSUER": ISSUER,
        "ONLYSQ_MCP_AUTH_AUDIENCE": AUDIENCE,
        "ONLYSQ_MCP_AUTH_JWKS_URL": key_server.url,
    }
    check_bind(make_settings(**oauth), "0.0.0.0", False)


def test_a_broken_tokens_file_stops_the_start_naming_the_line_not_its_content(tmp_path):
    path = tmp_path / "tokens"
    path.write_text(f"alice:{ALICE_TOKEN}\n{BOB_TOKEN}\n")
    result = subprocess.run(
        [*server_command(), "--transport", "http", "--port", "1"],
        env=clean_env(ONLYSQ_MCP_HTTP_TOKENS_FILE=str(path)),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 2
    assert "ONLYSQ_MCP_HTTP_TOKENS_FILE" in result.stderr and "line 2" in result.stderr
    assert "Traceback" not in result.stderr
    assert ALICE_TOKEN not in result.stderr and BOB_TOKEN not in result.stderr


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ONLYSQ_MCP_AUTH_ISSUER": ISSUER}, "are set together"),
        (
            {
                "ONLYSQ_MCP_AUTH_ISSUER": ISSUER,
                "ONLYSQ_MCP_AUTH_AUDIENCE": AUDIENCE,
                "ONLYSQ_MCP_AUTH_JWKS_URL": "http://issuer.test/jwks.json",
            },
            "must be an https URL",
        ),
        (
            {
                "ONLYSQ_MCP_AUTH_ISSUER": "issuer.test",
                "ONLYSQ_MCP_AUTH_AUDIENCE": AUDIENCE,
                "ONLYSQ_MCP_AUTH_JWKS_URL": "https://issuer.test/jwks.json",
            },
            "must be http(s) URLs",
        ),
    ],
)
def test_oauth_settings_are_refused_when_incomplete_or_unsafe(make_settings, env, message):
    with pytest.raises(ValidationError, match=re.escape(message)):
        make_settings(**env)


async def test_the_shared_token_and_a_user_named_shared_both_work(make_settings, tmp_path):
    path = tmp_path / "tokens"
    path.write_text(f"shared:{ALICE_TOKEN}\n")
    verifier = token_verifier(make_settings(ONLYSQ_MCP_HTTP_TOKEN=BOB_TOKEN, ONLYSQ_MCP_HTTP_TOKENS_FILE=path))
    assert verifier is not None
    for token in (ALICE_TOKEN, BOB_TOKEN):
        access = await verifier.verify_token(token)
        assert access is not None and access.subject == "shared"
    assert await verifier.verify_token(CAROL_TOKEN) is None


def oauth_env(jwks_url: str) -> dict[str, str]:
    return {
        "ONLYSQ_MCP_AUTH_ISSUER": ISSUER,
        "ONLYSQ_MCP_AUTH_AUDIENCE": AUDIENCE,
        "ONLYSQ_MCP_AUTH_JWKS_URL": jwks_url,
    }


@pytest.mark.parametrize("kind", ["oversized", "slow", "not_json", "unreachable"])
async def test_a_bad_key_server_means_401_within_the_time_limit(make_settings, signing_key, monkeypatch, kind):
    monkeypatch.setattr(auth, "JWKS_TIMEOUT_SECONDS", 0.5)
    public = json.loads(RSAAlgorithm.to_jwk(signing_key.public_key()))
    key = {**public, "kid": "k1", "alg": "RS256"}
    server = None
    if kind == "unreachable":
        url = f"http://127.0.0.1:{free_port()}/jwks.json"
    else:
        document = {
            "oversized": {"keys": [key], "padding": "x" * auth.MAX_JWKS_BYTES},
            "slow": {"keys": [key]},
            "not_json": [],
        }[kind]
        server = KeyServer(document, delay=3 if kind == "slow" else 0)
        url = server.url
    try:
        verifier = token_verifier(make_settings(**oauth_env(url)))
        assert verifier is not None
        started = time.monotonic()
        assert await verifier.verify_token(access_token(signing_key)) is None
        assert time.monotonic() - started < 2
    finally:
        if server is not None:
            server.httpd.shutdown()
