"""Packaging: the sdist and wheel build on a fresh machine, carry the bundled catalogue, and run via uvx."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest

import onlysq_mcp

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--wheel", "--outdir", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return out


def test_wheel_contents(dist):
    (wheel,) = dist.glob("onlysq_mcp-*.whl")
    assert wheel.name.startswith(f"onlysq_mcp-{onlysq_mcp.__version__}-")
    names = zipfile.ZipFile(wheel).namelist()
    assert "onlysq_mcp/data/models.json" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "onlysq-mcp = onlysq_mcp.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
    assert not [n for n in names if n.startswith("tests/")]
    # The MIT licence the metadata declares travels with the wheel (PEP 639: License-File).
    license_file = next(n for n in names if n.endswith(".dist-info/licenses/LICENSE"))
    assert zipfile.ZipFile(wheel).read(license_file) == (ROOT / "LICENSE").read_bytes()
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "License-Expression: MIT" in metadata and "License-File: LICENSE" in metadata


def test_sdist_contents(dist):
    (sdist,) = dist.glob("onlysq_mcp-*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = archive.getnames()
    for wanted in ("pyproject.toml", "README.md", "LICENSE", "server.json", "onlysq_mcp/data/models.json"):
        assert any(n.endswith(wanted) for n in names), wanted


def test_installed_wheel_loads_its_bundled_catalogue(dist, tmp_path):
    (wheel,) = dist.glob("onlysq_mcp-*.whl")
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), str(wheel)],
        check=True,
        timeout=120,
    )
    code = (
        "import onlysq_mcp, onlysq_mcp.providers.onlysq as c; print(onlysq_mcp.__file__); print(len(c.load_bundled()))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(target)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out[0].startswith(str(target))  # the wheel's copy, not the working tree
    assert int(out[1]) > 80


def test_uvx_from_the_source_tree(tmp_path):
    uvx = Path(sys.executable).parent / "uvx"
    env = {**os.environ, "UV_CACHE_DIR": str(tmp_path / "uv-cache"), "UV_PYTHON": sys.executable}
    result = subprocess.run(
        [str(uvx), "--from", str(ROOT), "onlysq-mcp", "--version"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == f"onlysq-mcp {onlysq_mcp.__version__}"


def test_license_is_the_mit_text_for_the_declared_authors():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert project["license"] == "MIT" and text.startswith("MIT License\n")
    (author,) = project["authors"]
    assert f"Copyright (c) 2026 {author['name']}\n" in text
    assert 'THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND' in text
