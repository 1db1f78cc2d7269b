"""The bundled model catalogue: live /ai/models shape, content, and no drift from its generator."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
CATALOGUE = ROOT / "onlysq_mcp" / "data" / "models.json"
SCRIPT = ROOT / "scripts" / "build_catalogue.py"
PAGE = ROOT / "scripts" / "onlysq_models_page.txt"


def load() -> dict:
    return json.loads(CATALOGUE.read_text(encoding="utf-8"))


def build_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_catalogue", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_has_the_live_shape():
    data = load()
    assert isinstance(data["api-version"], str) and data["api-version"]
    models = data["models"]
    assert isinstance(models, dict)
    assert len(models) >= 80
    for model_id, entry in models.items():
        assert isinstance(model_id, str) and model_id
        assert isinstance(entry, dict)
        for key in ("name", "description", "modality"):
            assert isinstance(entry[key], str) and entry[key], (model_id, key)
        assert entry["modality"] in {"text", "image", "sound"}


def test_contains_known_models():
    models = load()["models"]
    assert models["gpt-4o-mini"]["modality"] == "text"
    assert models["gemini-2.5-flash"]["modality"] == "text"
    assert models["e5-mistral-7b"]["modality"] == "text"  # as the page lists it; the server makes it `embedding`
    assert models["flux"]["modality"] == "image"
    assert models["gtts"]["modality"] == "sound"


def test_invents_nothing_the_page_does_not_give():
    """The page's rows give an id (its "Model name" column), a description, a type, a modality and
    endpoints: no display name, owner, status or tier. The bundled list must not make them up."""
    page = build_script().repair(PAGE.read_text(encoding="utf-8"))
    rows: dict[str, list[str]] = {}
    for line in page.splitlines():
        if line.count("\t") == 4:
            rows.setdefault(line.split("\t")[0], line.split("\t"))  # a repeated id: the first row, as the script
    for model_id, entry in load()["models"].items():
        assert model_id in rows, model_id
        assert entry["name"] == model_id, model_id
        assert entry["description"] == rows[model_id][1].strip(), model_id
        for key in ("owner", "status", "tier", "cost", "can-stream", "can-tools", "can-think"):
            assert entry[key] is None, (model_id, key)


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
