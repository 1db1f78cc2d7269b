"""Settings: defaults that work with no configuration, env and .env, one-line errors, no secrets in repr."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from onlysq_mcp.settings import ImageDelivery, Settings, SettingsError, load_settings


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
