"""The bundled model catalogue: live /ai/models shape, content, and no drift from its generator."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CATALOGUE = ROOT / "onlysq_mcp" / "data" / "models.json"
SCRIPT = ROOT / "scripts" / "build_catalogue.py"
PAGE = ROOT / "scripts" / "onlysq_models_page.txt"


def load() -> dict:
    return json.loads(CATALOGUE.read_text(encoding="utf-8"))


def test_has_the_live_shape():
    data = load()
    assert isinstance(data["api-version"], str) and data["api-version"]
    models = data["models"]
    assert isinstance(models, dict)
    assert len(models) >= 80
    for model_id, entry in models.items():
        assert isinstance(model_id, str) and model_id
        assert isinstance(entry, dict)
        for key in ("name", "description", "modality", "owner", "status"):
            assert isinstance(entry[key], str) and entry[key], (model_id, key)
        assert entry["modality"] in {"text", "image", "sound"}
        assert entry["status"] == "work"


def test_contains_known_models():
    models = load()["models"]
    assert models["gpt-4o-mini"]["modality"] == "text"
    assert models["gemini-2.5-flash"]["owner"] == "google"
    assert models["gemini-2.5-flash"]["modality"] == "text"
    assert models["gemini-2.5-flash"]["name"] == "Gemini 2.5 Flash"
    assert models["flux"]["modality"] == "image"
    assert models["gtts"]["modality"] == "sound"


def test_descriptions_have_no_mojibake():
    for model_id, entry in load()["models"].items():
        for marker in ("â€", "Ã"):
            assert marker not in entry["description"], model_id
    assert "GPT\u20114o" in load()["models"]["gpt-4o"]["description"]


def test_file_is_utf8_pretty_json_with_trailing_newline():
    text = CATALOGUE.read_text(encoding="utf-8")
    assert text.endswith("}\n")
    assert "\n " in text  # pretty-printed
    assert "\\u20" not in text  # written with ensure_ascii=False


def test_regenerating_from_the_committed_page_gives_the_same_file(tmp_path):
    out = tmp_path / "models.json"
    subprocess.run([sys.executable, str(SCRIPT), str(PAGE), str(out)], check=True, capture_output=True)
    assert out.read_bytes() == CATALOGUE.read_bytes(), "run python scripts/build_catalogue.py and commit the result"
