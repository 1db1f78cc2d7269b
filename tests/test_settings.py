"""Settings: defaults that work with no configuration, env and .env, one-line errors, no secrets in repr."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from mcp import Client, StdioServerParameters

from onlysq_mcp.settings import ImageDelivery, Settings, SettingsError, StreamMode, load_settings
from tests.helpers import clean_env, free_port, server_command, text_of, upstream_env


@pytest.fixture
def clean(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in list(os.environ):
        if name.startswith(("ONLYSQ_", "YANDEX_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_defaults_work_without_configuration(clean):
    settings = Settings()
    assert settings.onlysq_api_key.get_secret_value() == "openai"
    assert str(settings.onlysq_base_url) == "https://api.onlysq.ru/"
    assert settings.onlysq_chat_model == "gpt-4o-mini"
    assert settings.onlysq_vision_model == "gemini-2.5-flash"
    assert settings.onlysq_image_model == "flux"
    assert settings.onlysq_retries == 3
    assert settings.onlysq_mcp_image_delivery is ImageDelivery.PREVIEW
    assert settings.onlysq_stream is StreamMode.AUTO
    assert not settings.yandex_configured
    assert settings.onlysq_mcp_output_dir.name == "images"
    assert "onlysq-mcp" in str(settings.onlysq_mcp_output_dir)


def test_environment_and_dotenv(clean, monkeypatch):
    (clean / ".env").write_text("ONLYSQ_CHAT_MODEL=gemini-2.0-flash\nONLYSQ_RETRIES=1\n")
    monkeypatch.setenv("ONLYSQ_RETRIES", "5")
    settings = Settings()
    assert settings.onlysq_chat_model == "gemini-2.0-flash"  # from .env
    assert settings.onlysq_retries == 5  # the environment wins over .env


def test_yandex_configured_with_either_credential(clean, monkeypatch):
    monkeypatch.setenv("YANDEX_FOLDER_ID", "b1g")
    monkeypatch.setenv("YANDEX_IAM_TOKEN", "t")
    assert Settings().yandex_configured


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"ONLYSQ_TIMEOUT": "abc"}, "ONLYSQ_TIMEOUT"),
        ({"ONLYSQ_TIMEOUT": "-1"}, "ONLYSQ_TIMEOUT"),
        ({"ONLYSQ_RETRIES": "99"}, "ONLYSQ_RETRIES"),
        ({"ONLYSQ_BASE_URL": "not a url"}, "ONLYSQ_BASE_URL"),
        ({"ONLYSQ_MCP_IMAGE_DELIVERY": "email"}, "ONLYSQ_MCP_IMAGE_DELIVERY"),
        ({"ONLYSQ_STREAM": "sometimes"}, "ONLYSQ_STREAM"),
        ({"ONLYSQ_MCP_LOG_LEVEL": "LOUD"}, "ONLYSQ_MCP_LOG_LEVEL"),
        ({"YANDEX_API_KEY": "k"}, "YANDEX_FOLDER_ID"),
    ],
)
def test_invalid_settings_name_the_variable_in_one_line(clean, monkeypatch, env, named):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert named in message
    assert "\n" not in message


def test_secrets_never_in_repr_or_errors(clean, monkeypatch):
    monkeypatch.setenv("ONLYSQ_API_KEY", "sq-very-secret")
    monkeypatch.setenv("YANDEX_API_KEY", "y-very-secret")
    monkeypatch.setenv("YANDEX_FOLDER_ID", "b1g")
    settings = Settings()
    assert "very-secret" not in repr(settings)
    assert "very-secret" not in str(settings.model_dump())
    monkeypatch.setenv("ONLYSQ_TIMEOUT", "x")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert "very-secret" not in str(caught.value)
    assert sorted(settings.secrets()) == ["sq-very-secret", "y-very-secret"]


def test_every_setting_treats_an_empty_value_as_not_set(clean, monkeypatch):
    """Host config templates pass `""` for every field left blank: each must fall back to its default."""
    defaults = Settings()
    names = [name.upper() for name in Settings.model_fields]
    for name in names[: len(names) // 2]:
        monkeypatch.setenv(name, "")
    (clean / ".env").write_text("".join(f"{name}=\n" for name in names[len(names) // 2 :]))
    assert Settings() == defaults


def test_empty_token_does_not_count_as_a_token_for_a_public_bind(clean, tmp_path):
    """`ONLYSQ_MCP_HTTP_TOKEN=` once let the server bind 0.0.0.0 and then refuse every request."""
    env = clean_env(ONLYSQ_MCP_HTTP_TOKEN="", ONLYSQ_MCP_OUTPUT_DIR=str(tmp_path / "images"))
    command = [*server_command(), "--transport", "http", "--host", "0.0.0.0", "--port", str(free_port())]
    finished = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert finished.returncode == 2
    assert "refusing to serve on 0.0.0.0 without a token" in finished.stderr


@pytest.mark.anyio
async def test_empty_variables_over_stdio_use_the_defaults(upstream, tmp_path):
    """Empty output folder → the per-user data folder, not the working folder; empty Yandex key → no Yandex."""
    work, data = tmp_path / "work", tmp_path / "data"
    work.mkdir()
    env = upstream_env(upstream.base_url, tmp_path / "unused", yandex=False)
    env |= {"ONLYSQ_MCP_OUTPUT_DIR": "", "YANDEX_API_KEY": "", "YANDEX_FOLDER_ID": "", "YANDEX_IAM_TOKEN": ""}
    params = StdioServerParameters(
        command=server_command()[0], env=clean_env(XDG_DATA_HOME=str(data), **env), cwd=str(work)
    )
    async with Client(params) as client:
        models = await client.call_tool("list_models", {"kind": "image"})
        result = await client.call_tool("generate_image", {"prompt": "a lighthouse"})
    assert not result.is_error, text_of(result)
    assert all(model["provider"] == "onlysq" for model in models.structured_content["models"])
    saved = Path(result.structured_content["images"][0]["path"])
    assert saved.parent == data / "onlysq-mcp" / "images"
    assert list(work.iterdir()) == []
