"""Every setting of the server, read from environment variables and an optional `.env` file.

Field names are the environment variable names in lower case, so `Settings.onlysq_api_key` is
`ONLYSQ_API_KEY`: one name to search for in code, docs and a user's config.

An empty variable means "not set", for every setting: host config templates and bundles pass `""` for
every field a user left blank, and `ONLYSQ_MCP_HTTP_TOKEN=` must not count as a token (nor
`ONLYSQ_MCP_OUTPUT_DIR=` as the working folder).
"""

from __future__ import annotations

import os
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated
from urllib.parse import unquote, urlsplit

from pydantic import Field, HttpUrl, JsonValue, SecretStr, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from .images import MAX_IMAGE_BYTES


def default_output_dir() -> Path:
    # Imported here: platformdirs is only needed when no folder is configured.
    import platformdirs

    return Path(platformdirs.user_data_dir("onlysq-mcp", appauthor=False)) / "images"


# OnlySq's documented public key: the default, and not a secret.
PUBLIC_ONLYSQ_KEY = "openai"


# `json_schema_extra` of a setting that only the HTTP transport reads: scripts/generate.py leaves such settings
# out of server.json, whose package runs over stdio. Their descriptions start with "HTTP only:".
HTTP_ONLY: dict[str, JsonValue] = {"http_only": True}
AWS_SECRETS = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


def is_http_only(field: FieldInfo) -> bool:
    extra = field.json_schema_extra
    return isinstance(extra, dict) and extra.get("http_only") is True


class ImageDelivery(StrEnum):
    INLINE = "inline"
    PREVIEW = "preview"
    LINK = "link"


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


class StreamMode(StrEnum):
    """When a chat answer is streamed from the upstream (ONLYSQ_STREAM)."""

    AUTO = "auto"
    TRUE = "true"
    FALSE = "false"

    def streams(self, progress: bool) -> bool:
        """Whether to stream an answer; `progress`: the caller asked for progress notifications."""
        return self is StreamMode.TRUE or (self is StreamMode.AUTO and progress)


# The spellings pydantic reads as a boolean, which ONLYSQ_STREAM accepted before it had `auto`.
TRUE_WORDS = frozenset({"1", "on", "t", "true", "y", "yes"})
FALSE_WORDS = frozenset({"0", "off", "f", "false", "n", "no"})


# What httpx2 can send calls through (httpx2/_config.py, `Proxy`); socks needs its `socks` extra.
PROXY_SCHEMES = frozenset({"http", "https", "socks5", "socks5h"})


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        env_ignore_empty=True,
        frozen=True,
    )

    # --- OnlySq ---
    onlysq_api_key: SecretStr = Field(
        SecretStr(PUBLIC_ONLYSQ_KEY), description="OnlySq API key; `openai` is the documented public key."
    )
    onlysq_base_url: HttpUrl = Field(
        HttpUrl("https://api.onlysq.ru"),
        description="OnlySq API root; `/ai/v2`, `/ai/imagen` and `/ai/models` are appended.",
    )
    onlysq_chat_model: str = Field("gpt-4o-mini", min_length=1, description="Default model of `chat`.")
    onlysq_vision_model: str = Field("gemini-2.5-flash", min_length=1, description="Default model of `describe_image`.")
    onlysq_image_model: str = Field("flux", min_length=1, description="Default model of `generate_image`.")
    onlysq_stream: StreamMode = Field(
        StreamMode.AUTO,
        description="Stream chat replies from the upstream (server-sent events): `auto` only when the caller asked "
        "for progress (the pieces become progress notifications), `true` always, `false` never (for proxies that "
        "break SSE).",
    )

    # --- Yandex AI Studio ---
    yandex_api_key: SecretStr | None = Field(None, description="Yandex AI Studio API key (sent as `Api-Key`).")
    yandex_iam_token: SecretStr | None = Field(
        None, description="Yandex IAM token (sent as `Bearer`), used when no API key is set."
    )
    yandex_folder_id: str | None = Field(
        None, description="Yandex Cloud folder id that owns the chat and image models."
    )
    yandex_base_url: HttpUrl = Field(
        HttpUrl("https://ai.api.cloud.yandex.net"), description="Yandex AI Studio API root."
    )

    # --- Upstream calls ---
    onlysq_connect_timeout: Annotated[float, Field(gt=0)] = Field(
        10.0, description="Seconds to wait for a connection to an upstream."
    )
    onlysq_timeout: Annotated[float, Field(gt=0)] = Field(
        120.0,
        description="Seconds to wait for upstream data: a whole answer, or the next chunk of a stream "
        "(an unstreamed chat answer has ONLYSQ_MCP_STREAM_TIMEOUT).",
    )
    onlysq_retries: Annotated[int, Field(ge=0, le=10)] = Field(
        3,
        description="Retries after a 408, 409, 429 or 5xx answer, or a connection error (as the OpenAI and Anthropic SDKs retry).",
    )
    onlysq_retry_backoff: Annotated[float, Field(ge=0)] = Field(
        0.5, description="First wait between retries in seconds; doubles each time, with jitter."
    )
    onlysq_retry_deadline: Annotated[float, Field(gt=0)] = Field(
        60.0, description="No retry starts later than this many seconds after the first try."
    )
    onlysq_mcp_models_cache_ttl: Annotated[float, Field(ge=0)] = Field(
        600.0,
        description="Seconds the live model catalogue is reused; it is fetched again in the background before "
        "it expires (0: fetched for each `list_models`, and tools leave model checks to the upstream).",
    )
    onlysq_mcp_models_timeout: Annotated[float, Field(gt=0, le=60)] = Field(
        5.0,
        description="Seconds a fetch of the model catalogue may take (`list_models` waits for it, other tools "
        "never do); after a failure the last good or bundled list is used for 30 s.",
    )
    onlysq_mcp_stream_timeout: Annotated[float, Field(gt=0)] = Field(
        300.0,
        description="Seconds a chat answer may take in all, streamed or not (ONLYSQ_TIMEOUT bounds each wait for "
        "a chunk of a stream).",
    )
    onlysq_mcp_proxy: str | None = Field(
        None,
        description="Proxy for every outgoing call (both upstreams, and image URLs `describe_image` downloads): "
        "`http://`, `https://`, `socks5://` or `socks5h://` `[user:password@]host:port`. `HTTPS_PROXY` and "
        "the other proxy variables are ignored, so that no stray variable reroutes calls that carry API keys.",
    )
    onlysq_mcp_max_response_bytes: Annotated[int, Field(ge=1024)] = Field(
        32_000_000,
        description="Largest upstream answer read: a JSON body (a base64 image takes 4/3 of its size) or the "
        "events of a streamed reply together; a larger one is cut off with an error.",
    )

    # --- Images ---
    onlysq_mcp_output_dir: Path = Field(
        default_factory=default_output_dir,
        description="Folder where generated images are saved (created on first use).",
    )
    onlysq_mcp_storage_url: str | None = Field(
        None,
        description="Where images and image-job records are kept: a folder, or an S3-compatible bucket "
        "`s3://bucket/prefix` (AWS S3, Yandex Object Storage, MinIO) that every replica shares, reached with the "
        "standard `AWS_*` variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, ...). "
        "Unset: the folder ONLYSQ_MCP_OUTPUT_DIR.",
    )
    onlysq_mcp_s3_endpoint_url: HttpUrl | None = Field(
        None,
        description="The S3 endpoint for a bucket not on AWS, e.g. `https://storage.yandexcloud.net` or a MinIO "
        "server (plain http only on loopback).",
    )
    onlysq_mcp_s3_presign_seconds: Annotated[int, Field(ge=0, le=604_800)] = Field(
        0,
        description="With a bucket: each image result also carries an HTTPS link (`url`) that fetches the image "
        "without credentials for this many seconds, for hosts that fetch links. 0: no links.",
    )
    onlysq_mcp_job_lease: Annotated[float, Field(ge=1, le=3600)] = Field(
        30.0,
        description="Seconds after which an image job whose server stopped writing its record is reported failed "
        "(the server rewrites it every third of this while the job runs).",
    )
    onlysq_mcp_image_delivery: ImageDelivery = Field(
        ImageDelivery.PREVIEW,
        description="`inline` full images, `preview` (downscaled when over budget), or `link` (no image data). "
        "Unset: chosen for the calling host where its limit is known (README, Result size).",
    )
    onlysq_mcp_inline_budget: Annotated[int, Field(ge=10_000)] = Field(
        700_000,
        description="Most bytes of base64 image data inlined in one tool result. Unset: chosen for the calling "
        "host where its limit is known (README, Result size).",
    )
    onlysq_mcp_image_wait: Annotated[float, Field(gt=0)] = Field(
        45.0,
        description="Seconds `generate_image` waits for the upstream before it returns a job handle instead "
        "(hosts time out requests at about 60 s); the images are still saved when ready.",
    )
    onlysq_mcp_max_image_bytes: Annotated[int, Field(ge=1024)] = Field(
        MAX_IMAGE_BYTES,
        description="Largest image accepted from an upstream, and largest file served at an `onlysq://images/...` "
        "URI (larger ones are refused without being read).",
    )
    onlysq_mcp_resources_page_size: Annotated[int, Field(ge=1, le=1000)] = Field(
        50, description="Generated images per page of `resources/list` (a client pages on with the returned cursor)."
    )
    onlysq_mcp_max_input_bytes: Annotated[int, Field(ge=1024)] = Field(
        20_000_000, description="Largest image `describe_image` accepts (file, URL or data)."
    )
    onlysq_mcp_vision_max_side: Annotated[int, Field(ge=64)] = Field(
        2048, description="Longer images are downscaled to this side before they are sent for description."
    )
    onlysq_mcp_vision_max_bytes: Annotated[int, Field(ge=10_000)] = Field(
        4_000_000, description="Larger images are re-encoded smaller before they are sent for description."
    )
    # Pillow itself refuses only above 2 × 89.5 Mpx; a decode costs 4-6 bytes a pixel, several times over.
    onlysq_mcp_max_input_pixels: Annotated[int, Field(ge=1_000_000, le=178_956_970)] = Field(
        40_000_000,
        description="Most pixels (width × height, read from the file header before anything is decoded) of an "
        "image `describe_image` accepts or an upstream returns; a 9 kB file can declare 170 million.",
    )

    # --- Serving over HTTP, and what callers may reach ---
    onlysq_mcp_http_token: SecretStr | None = Field(
        None,
        description="HTTP only: when set, every request must carry `Authorization: Bearer <token>`.",
        json_schema_extra=HTTP_ONLY,
    )
    onlysq_mcp_http_tokens_file: Path | None = Field(
        None,
        description="HTTP only: a file of `name:token` lines (or `name:sha256:<hex of the token's SHA-256>`), "
        "one per user; `#` comments and blank lines are ignored. A request carrying one of the tokens acts as "
        "its name. Re-read when it changes.",
        json_schema_extra=HTTP_ONLY,
    )
    onlysq_mcp_auth_issuer: str | None = Field(
        None,
        description="HTTP only: OAuth 2.1 resource-server mode. The `iss` of the access tokens (JWTs) to accept, "
        "exactly as the authorization server writes it; also published as the authorization server in "
        "`/.well-known/oauth-protected-resource`. Set together with ONLYSQ_MCP_AUTH_AUDIENCE and "
        "ONLYSQ_MCP_AUTH_JWKS_URL.",
        json_schema_extra=HTTP_ONLY,
    )
    onlysq_mcp_auth_audience: str | None = Field(
        None,
        description="HTTP only: this server's public URL (e.g. `https://mcp.example.com/mcp`): the `aud` an "
        "access token must name, and the `resource` of the protected-resource metadata.",
        json_schema_extra=HTTP_ONLY,
    )
    onlysq_mcp_auth_jwks_url: HttpUrl | None = Field(
        None,
        description="HTTP only: where the authorization server publishes the keys that sign its access tokens "
        "(its `jwks_uri`).",
        json_schema_extra=HTTP_ONLY,
    )
    onlysq_mcp_allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="HTTP only: extra `Host` header values to accept (comma-separated, `name:*` for any port), "
        "e.g. the public name behind a reverse proxy. Loopback names are always accepted.",
        json_schema_extra=HTTP_ONLY,
    )
    onlysq_mcp_max_sessions_per_client: Annotated[int, Field(ge=1, le=10_000)] = Field(
        32,
        description="HTTP only: most MCP sessions one user (a named token or an OAuth `sub`) or, for the shared "
        "token and no token, one client address may hold open; further `initialize` requests get 429 until one "
        "ends, so one client cannot fill the server for everyone.",
        json_schema_extra=HTTP_ONLY,
    )
    onlysq_mcp_unused_session_timeout: Annotated[float, Field(gt=0, le=3600)] = Field(
        30.0,
        description="HTTP only: a session that receives no request within this many seconds of its "
        "`initialize` is closed.",
        json_schema_extra=HTTP_ONLY,
    )
    onlysq_mcp_session_idle_timeout: Annotated[float, Field(gt=0, le=86_400)] = Field(
        1800.0,
        description="HTTP only: a session with no request in flight and no open stream for this many seconds "
        "is closed; the client then starts a new one.",
        json_schema_extra=HTTP_ONLY,
    )
    onlysq_mcp_http_request_timeout: Annotated[float, Field(gt=0, le=300)] = Field(
        10.0,
        description="HTTP only: seconds a connection has to send a complete request head, and the longest "
        "pause allowed within a request body; slower connections are closed.",
        json_schema_extra=HTTP_ONLY,
    )
    onlysq_mcp_http_keep_alive_timeout: Annotated[int, Field(ge=1, le=300)] = Field(
        5,
        description="HTTP only: seconds an idle keep-alive connection stays open between requests.",
        json_schema_extra=HTTP_ONLY,
    )
    onlysq_mcp_stateless: bool = Field(
        False,
        description="HTTP only: serve every request on its own, with no MCP session between requests, so any "
        "replica behind a load balancer without sticky sessions can answer it. Images are then reached by the "
        "URIs in tool results only (no per-session resource list, no list-changed notifications).",
        json_schema_extra=HTTP_ONLY,
    )
    onlysq_mcp_file_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="Folders `describe_image` may read local files from, separated by `:` (`;` on Windows). "
        "Empty: any file over stdio, none over HTTP.",
    )
    onlysq_mcp_allow_private_urls: bool = Field(
        False, description="Let `describe_image` fetch URLs on loopback, private and link-local addresses."
    )
    onlysq_mcp_max_concurrency: Annotated[int, Field(ge=1, le=1000)] = Field(
        16,
        description="Most upstream connections at once, plus one so that the background refresh of the model "
        "catalogue never makes a call wait; further calls wait their turn.",
    )
    onlysq_mcp_max_concurrency_per_user: Annotated[int, Field(ge=1, le=1000)] | None = Field(
        None,
        description="HTTP only: most upstream requests of one user (a named token or an OAuth `sub`) at once, so "
        "that one user cannot take every connection; further requests of that user wait. Unset: no limit per user.",
        json_schema_extra=HTTP_ONLY,
    )
    onlysq_mcp_max_downloads: Annotated[int, Field(ge=1, le=100)] = Field(
        4,
        description="Most image URLs `describe_image` downloads at once; further downloads wait their turn. "
        "Downloads have their own connections, so slow image hosts never hold up upstream calls.",
    )

    onlysq_mcp_fast_start: bool = Field(
        True,
        description="stdio only: answer a host's start-up requests (`initialize`, the tool, prompt and resource "
        "lists) from answers shipped with the package while the server loads; `false` to debug the start.",
    )
    onlysq_mcp_log_level: str = Field("INFO", description="Log level on stderr: DEBUG, INFO, WARNING, ERROR.")
    onlysq_mcp_log_format: LogFormat = Field(
        LogFormat.TEXT,
        description="Log lines on stderr: `text` for people, or `json` (one object a line with time, level, "
        "logger and message) for log collectors.",
    )

    @field_validator("onlysq_stream", mode="before")
    @classmethod
    def _stream_words(cls, value: object) -> object:
        if isinstance(value, bool):
            return StreamMode.TRUE if value else StreamMode.FALSE
        if isinstance(value, str):
            word = value.strip().lower()
            return StreamMode.TRUE if word in TRUE_WORDS else StreamMode.FALSE if word in FALSE_WORDS else word
        return value

    @field_validator("onlysq_mcp_allowed_hosts", mode="before")
    @classmethod
    def _comma_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("onlysq_mcp_file_roots", mode="before")
    @classmethod
    def _path_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(os.pathsep) if item.strip()]
        return value

    @field_validator("onlysq_mcp_file_roots")
    @classmethod
    def _absolute_roots(cls, roots: list[Path]) -> list[Path]:
        # Resolved once here, so the check on every read compares like with like (symlinks, `..`).
        return [root.expanduser().resolve() for root in roots]

    @field_validator("onlysq_mcp_proxy")
    @classmethod
    def _proxy_url(cls, value: str | None) -> str | None:
        # Messages never repeat the value: it may carry a password.
        if value is None:
            return None
        parts = urlsplit(value.strip())
        if parts.scheme.lower() not in PROXY_SCHEMES:
            raise ValueError("must start with http://, https://, socks5:// or socks5h://")
        if not parts.hostname:
            raise ValueError("has no host name; expected e.g. http://proxy.example:3128")
        try:
            port_ok = parts.port != 0  # reading `port` raises ValueError for one that is no number up to 65535
        except ValueError:
            port_ok = False
        if not port_ok:
            raise ValueError("has no valid port; expected e.g. http://proxy.example:3128")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError("must be scheme://[user:password@]host[:port], without a path, query or fragment")
        return parts._replace(path="").geturl()

    @field_validator("onlysq_mcp_storage_url")
    @classmethod
    def _storage_url(cls, value: str | None) -> str | None:
        if value is None or not value.startswith("s3://"):
            return value
        bucket = urlsplit(value).netloc
        # Bucket names: 3-63 lower-case letters, digits, dots and hyphens (AWS S3 user guide, "Bucket naming rules").
        if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", bucket):
            raise ValueError("ONLYSQ_MCP_STORAGE_URL must be a folder or s3://bucket/prefix with a valid bucket name")
        return value

    @field_validator("onlysq_mcp_s3_endpoint_url")
    @classmethod
    def _s3_endpoint(cls, value: HttpUrl | None) -> HttpUrl | None:
        if value is not None and (value.username or value.password):
            raise ValueError("ONLYSQ_MCP_S3_ENDPOINT_URL takes no user or password: use the AWS_* variables")
        if value is not None and value.scheme != "https" and value.host not in ("127.0.0.1", "localhost", "[::1]"):
            # Signed requests over plain HTTP still carry every image in the clear.
            raise ValueError("ONLYSQ_MCP_S3_ENDPOINT_URL must be an https URL (plain http only on loopback)")
        return value

    @field_validator("onlysq_mcp_log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return level

    @model_validator(mode="after")
    def _yandex_complete(self) -> Settings:
        has_credential = self.yandex_api_key is not None or self.yandex_iam_token is not None
        if has_credential and not self.yandex_folder_id:
            raise ValueError("YANDEX_FOLDER_ID must be set when YANDEX_API_KEY or YANDEX_IAM_TOKEN is set")
        return self

    @model_validator(mode="after")
    def _oauth_complete(self) -> Settings:
        oauth = (self.onlysq_mcp_auth_issuer, self.onlysq_mcp_auth_audience, self.onlysq_mcp_auth_jwks_url)
        if any(value is not None for value in oauth) and None in oauth:
            raise ValueError(
                "ONLYSQ_MCP_AUTH_ISSUER, ONLYSQ_MCP_AUTH_AUDIENCE and ONLYSQ_MCP_AUTH_JWKS_URL are set together"
            )
        for value in (self.onlysq_mcp_auth_issuer, self.onlysq_mcp_auth_audience):
            if value is not None and not value.startswith(("https://", "http://")):
                raise ValueError("ONLYSQ_MCP_AUTH_ISSUER and ONLYSQ_MCP_AUTH_AUDIENCE must be http(s) URLs")
        jwks = self.onlysq_mcp_auth_jwks_url
        if jwks is not None and jwks.scheme != "https" and jwks.host not in ("127.0.0.1", "localhost", "[::1]"):
            # Keys read over plain HTTP could be swapped on the way, and with them who may call (MCP authorization
            # spec, "Communication Security": authorization server endpoints are served over HTTPS).
            raise ValueError("ONLYSQ_MCP_AUTH_JWKS_URL must be an https URL (plain http only on loopback)")
        return self

    @property
    def oauth_configured(self) -> bool:
        return self.onlysq_mcp_auth_jwks_url is not None

    @property
    def http_auth_configured(self) -> bool:
        """Whether some check of who connects is on: a shared token, a tokens file, or OAuth access tokens."""
        return (
            self.onlysq_mcp_http_token is not None
            or self.onlysq_mcp_http_tokens_file is not None
            or self.oauth_configured
        )

    @property
    def storage_url(self) -> str:
        """The storage in force: ONLYSQ_MCP_STORAGE_URL, or the output folder."""
        return self.onlysq_mcp_storage_url or str(self.onlysq_mcp_output_dir)

    @property
    def yandex_configured(self) -> bool:
        return bool(self.yandex_folder_id) and (self.yandex_api_key is not None or self.yandex_iam_token is not None)

    def secrets(self) -> list[str]:
        """Every secret value in force, so outgoing text can be scrubbed of them.

        The public key `openai` is left out: everyone knows it, and masking it would garble every
        mention of OpenAI models. The user and password of a base URL or of the proxy count as secrets, as written and
        percent-decoded.
        """
        # Every `SecretStr` setting, found by its type: a new secret setting is masked without a list to update.
        values = [getattr(self, name) for name in type(self).model_fields]
        found = [v.get_secret_value() for v in values if isinstance(v, SecretStr)]
        userinfo = [(url.username, url.password) for url in (self.onlysq_base_url, self.yandex_base_url)]
        if self.onlysq_mcp_proxy:
            proxy = urlsplit(self.onlysq_mcp_proxy)
            userinfo.append((proxy.username, proxy.password))
        for part in (part for pair in userinfo for part in pair):
            if part:
                found += [part, unquote(part)]
        # The bucket's credentials are read from the standard variables by the storage library, not settings.
        found += [os.environ.get(name, "") for name in AWS_SECRETS]
        return [value for value in dict.fromkeys(found) if value and value != PUBLIC_ONLYSQ_KEY]


class SettingsError(Exception):
    """The environment holds a setting that cannot be used; the message names it in one line."""


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        raise SettingsError(describe_validation_error(exc)) from None


def describe_validation_error(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors(include_input=False, include_url=False):
        field = ".".join(str(part) for part in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        problems.append(f"{field.upper()}: {message}" if field else message)
    return "invalid setting " + "; ".join(problems)
