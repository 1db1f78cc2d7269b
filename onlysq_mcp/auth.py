"""Who is calling over HTTP: named bearer tokens (ONLYSQ_MCP_HTTP_TOKEN, ONLYSQ_MCP_HTTP_TOKENS_FILE) and
OAuth 2.1 access tokens (JWTs signed by the keys at ONLYSQ_MCP_AUTH_JWKS_URL), behind the SDK's
`TokenVerifier` protocol (mcp/server/auth/provider.py) so the SDK's session ownership and `get_access_token()`
see the same principal.

The principal is a token's name, or a JWT's `sub`; it is what logs show, never a token.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx2
import jwt
from mcp.server.auth.provider import AccessToken
from starlette.routing import Route, Router
from starlette.types import ASGIApp

from .principals import SHARED_TOKEN_NAME
from .settings import Settings

logger = logging.getLogger(__name__)

JWK = dict[str, Any]
MAX_TOKENS_FILE_BYTES = 1024 * 1024
HASHED = re.compile(r"sha256:([0-9a-fA-F]{64})")
NAME = re.compile(r"[^\s:]{1,100}")

# Asymmetric algorithms only: with keys fetched from a URL, an HS* token would be checked against a public key
# used as a shared secret (the RFC 8725 section 2.1 / 3.1 confusion), and `none` has no signature at all.
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
MAX_ACCESS_TOKEN_CHARS = 16_384
LEEWAY_SECONDS = 30
JWKS_TIMEOUT_SECONDS = 5.0
MAX_JWKS_BYTES = 256 * 1024
# Keys are re-read at least this often, so a rotation reaches us without a restart...
JWKS_MAX_AGE_SECONDS = 600.0
# ...and at most this often, so tokens naming unknown key ids cannot make us hammer the authorization server.
JWKS_MIN_REFETCH_SECONDS = 30.0


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def parse_tokens_file(text: str) -> dict[str, bytes]:
    """`name:token` or `name:sha256:<hex>` per line, into name → SHA-256 of the token.

    Tokens are compared by their digests, so plain and hashed entries are checked the same way, in constant time.
    A line's content never appears in an error: it may be a token.
    """
    tokens: dict[str, bytes] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, _, secret = line.partition(":")
        if not NAME.fullmatch(name) or not secret:
            raise ValueError(f"line {number} is not `name:token` or `name:sha256:<hex>`")
        if name in tokens:
            raise ValueError(f"line {number} repeats the name {name!r}")
        hashed = HASHED.fullmatch(secret)
        tokens[name] = bytes.fromhex(hashed.group(1)) if hashed else token_digest(secret)
    return tokens


class TokensFileError(ValueError):
    """The tokens file cannot be used at start-up."""


class TokensFile:
    """The tokens file, re-read when its modification time or size changes; a broken edit keeps the last good
    contents (and says so in the log) rather than locking everyone out."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._stamp: tuple[int, int] | None = None
        self._failure: str | None = None
        self.tokens: dict[str, bytes] = {}
        self.refresh(strict=True)

    def refresh(self, strict: bool = False) -> None:
        try:
            stat = os.stat(self._path)
            stamp = (stat.st_mtime_ns, stat.st_size)
            if stamp == self._stamp:
                return
            if stat.st_size > MAX_TOKENS_FILE_BYTES:
                raise ValueError(f"it is over {MAX_TOKENS_FILE_BYTES:,} bytes")
            tokens = parse_tokens_file(self._path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            if strict:
                raise TokensFileError(f"ONLYSQ_MCP_HTTP_TOKENS_FILE {self._path}: {exc}") from None
            if str(exc) != self._failure:
                # Once per distinct failure: it is checked on every request.
                logger.warning("Keeping the previous tokens: ONLYSQ_MCP_HTTP_TOKENS_FILE %s: %s", self._path, exc)
            self._failure = str(exc)
            return
        self._failure = None
        self._stamp = stamp
        self.tokens = tokens
        logger.info("Read %d tokens from %s", len(tokens), self._path)


class JwksCache:
    """The authorization server's signing keys by key id, fetched with bounded time and size."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._keys: dict[str | None, JWK] = {}
        self._fetched_at = -JWKS_MIN_REFETCH_SECONDS
        self._lock = anyio.Lock()

    async def key(self, kid: str | None, alg: str) -> jwt.PyJWK | None:
        stale = time.monotonic() - self._fetched_at > JWKS_MAX_AGE_SECONDS
        if stale or kid not in self._keys:
            await self._refetch()
        entry = self._keys.get(kid)
        if entry is None and kid is None and len(self._keys) == 1:
            # A token without `kid` from a server with one key (RFC 7515 section 4.1.4 makes `kid` optional).
            entry = next(iter(self._keys.values()))
        # A key that names its algorithm is used with that one only (RFC 7517 section 4.4); one that does not,
        # with whichever allowed algorithm fits its type (an RSA key signs RS* and PS* alike).
        if entry is None or entry.get("alg", alg) != alg:
            return None
        try:
            return jwt.PyJWK(entry, algorithm=alg)
        except jwt.PyJWTError:
            return None

    async def _refetch(self) -> None:
        async with self._lock:
            if time.monotonic() - self._fetched_at < JWKS_MIN_REFETCH_SECONDS:
                return
            self._fetched_at = time.monotonic()
            try:
                with anyio.fail_after(JWKS_TIMEOUT_SECONDS):
                    document = await self._download()
                self._keys = parse_jwks(document)
            except Exception as exc:
                # Keys we already have stay in use: a flaky authorization server must not lock everyone out.
                logger.warning("Could not read the signing keys at %s: %s", self._url, exc)

    async def _download(self) -> Any:
        async with (
            httpx2.AsyncClient(timeout=JWKS_TIMEOUT_SECONDS, follow_redirects=False) as client,
            client.stream("GET", self._url, headers={"accept": "application/json"}) as response,
        ):
            response.raise_for_status()
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_JWKS_BYTES:
                    raise ValueError(f"the key set is over {MAX_JWKS_BYTES:,} bytes")
        return json.loads(body)


def parse_jwks(document: Any) -> dict[str | None, JWK]:
    """Signing keys by key id; encryption keys and keys of other algorithms are left out."""
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise ValueError("the document has no `keys` list")
    return {
        entry.get("kid"): entry
        for entry in entries
        if isinstance(entry, dict) and entry.get("use", "sig") == "sig" and entry.get("alg", "RS256") in ALGORITHMS
    }


@dataclass(frozen=True)
class JwtRules:
    issuer: str
    audience: str


class JwtVerifier:
    """RFC 9068-style access tokens: signature by a key of the JWKS, `iss`, `aud`, `exp` (required), `nbf`,
    `sub` (required: it is the principal)."""

    def __init__(self, rules: JwtRules, keys: JwksCache) -> None:
        self._rules = rules
        self._keys = keys

    async def verify(self, token: str) -> AccessToken | None:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            return None
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in ALGORITHMS or not (kid is None or isinstance(kid, str)):
            return None
        key = await self._keys.key(kid, alg)
        if key is None:
            logger.info("Refused an access token: no signing key %.80r for %s", kid, alg)
            return None
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self._rules.audience,
                issuer=self._rules.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.PyJWTError as exc:
            # The library's message names the failed check (expired, audience, issuer, signature), not the token.
            logger.info("Refused an access token: %s", exc)
            return None
        subject = str(claims["sub"])
        scope = claims.get("scope")
        return AccessToken(
            token=token,
            client_id=str(claims.get("client_id") or claims.get("azp") or subject),
            scopes=scope.split() if isinstance(scope, str) else [],
            expires_at=int(claims["exp"]),
            resource=self._rules.audience,
            subject=subject,
            claims={"iss": claims["iss"]},
        )


class HttpTokenVerifier:
    """The SDK's `TokenVerifier`: a named token first (cheap, local), then an OAuth access token."""

    def __init__(self, shared_token: str | None, tokens_file: TokensFile | None, jwt_verifier: JwtVerifier | None):
        self._shared = [(SHARED_TOKEN_NAME, token_digest(shared_token))] if shared_token is not None else []
        self._file = tokens_file
        self._jwt = jwt_verifier

    async def verify_token(self, token: str) -> AccessToken | None:
        if not token or len(token) > MAX_ACCESS_TOKEN_CHARS:
            return None
        if (name := self._named(token)) is not None:
            return AccessToken(token=token, client_id=name, scopes=[], subject=name)
        if self._jwt is not None and token.count(".") == 2:
            return await self._jwt.verify(token)
        return None

    def _named(self, token: str) -> str | None:
        if self._file is not None:
            self._file.refresh()
        entries = [*(self._file.tokens.items() if self._file else ()), *self._shared]
        digest = token_digest(token)
        found = None
        # Every entry is compared, so the time taken does not say which name came close.
        for name, expected in entries:
            if hmac.compare_digest(digest, expected):
                found = name
        return found


def token_verifier(settings: Settings) -> HttpTokenVerifier | None:
    """The verifier for the configured auth modes, or None when HTTP requests are not checked."""
    if not settings.http_auth_configured:
        return None
    shared = settings.onlysq_mcp_http_token
    path = settings.onlysq_mcp_http_tokens_file
    jwt_verifier = None
    if settings.onlysq_mcp_auth_jwks_url is not None:
        assert settings.onlysq_mcp_auth_issuer is not None and settings.onlysq_mcp_auth_audience is not None
        rules = JwtRules(settings.onlysq_mcp_auth_issuer, settings.onlysq_mcp_auth_audience)
        jwt_verifier = JwtVerifier(rules, JwksCache(str(settings.onlysq_mcp_auth_jwks_url)))
    return HttpTokenVerifier(
        shared.get_secret_value() if shared is not None else None,
        TokensFile(path) if path is not None else None,
        jwt_verifier,
    )


ROOT_METADATA_PATH = "/.well-known/oauth-protected-resource"


@dataclass(frozen=True)
class ResourceMetadata:
    url: str
    paths: frozenset[str]
    app: ASGIApp


def resource_metadata(settings: Settings) -> ResourceMetadata | None:
    """RFC 9728 protected-resource metadata, from the SDK's handler (mcp/server/auth/routes.py): its URL, for
    `WWW-Authenticate`, and the app serving it, at the path RFC 9728 section 3.1 derives from the resource and at
    the bare well-known path that MCP clients also try (MCP authorization spec, "Protected Resource Metadata
    Discovery")."""
    if not settings.oauth_configured:
        return None
    from mcp.server.auth.routes import build_resource_metadata_url, create_protected_resource_routes
    from mcp.server.auth.settings import AuthSettings

    # AuthSettings keeps a path-less issuer without a trailing slash: issuers are compared as exact strings.
    auth = AuthSettings(
        issuer_url=settings.onlysq_mcp_auth_issuer,
        resource_server_url=settings.onlysq_mcp_auth_audience,
        validate_token_resource=False,  # JwtVerifier checks `aud` itself.
    )
    assert auth.resource_server_url is not None
    routes = create_protected_resource_routes(auth.resource_server_url, [auth.issuer_url], resource_name="onlysq-mcp")
    if routes[0].path != ROOT_METADATA_PATH:
        routes.append(Route(ROOT_METADATA_PATH, endpoint=routes[0].endpoint, methods=["GET", "OPTIONS"]))
    paths = frozenset(route.path for route in routes)
    return ResourceMetadata(str(build_resource_metadata_url(auth.resource_server_url)), paths, Router(routes=routes))
