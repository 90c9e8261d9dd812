"""The layers import one way: models (pure algorithms) <- core (what the gateway and the workers
share) <- service (HTTP) and worker (prompt search) <- cli (the composition root); the gateway
and the worker never import each other, and no package imports in a cycle."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NAMESPACE = "promptrec"
RANK = {"models": 0, "core": 1, "service": 2, "worker": 2, "cli": 3}
MAX_LINES = 400


def modules() -> dict[str, Path]:
    """promptrec.* module name -> file, for every source file of the layers."""
    out = {}
    for top in RANK:
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join((NAMESPACE, *parts))] = path
    return out


def imported(name: str, path: Path) -> set[str]:
    """The modules `path` imports (absolute names; relative imports resolved)."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            out.add(base)
            out.update(f"{base}.{alias.name}" for alias in node.names)
    return out


def layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == NAMESPACE and parts[1] in RANK else None


def package_edges(sources: dict[str, Path]) -> set[tuple[str, str]]:
    """(importing layer, imported layer) for every import across layers."""
    edges = set()
    for name, path in sources.items():
        for target in imported(name, path):
            if layer(target) and layer(target) != layer(name):
                edges.add((layer(name), layer(target)))
    return edges


def violations(edges: set[tuple[str, str]]) -> list[str]:
    return sorted(f"{a} imports {b}" for a, b in edges if RANK[b] >= RANK[a])


def test_no_layer_imports_one_above_it_or_beside_it():
    assert violations(package_edges(modules())) == []


def test_the_check_catches_an_upward_import(tmp_path):
    """The same check on a made-up tree with an upward and a sideways import."""
    bad = {
        "promptrec.core.x": tmp_path / "x.py",
        "promptrec.worker.y": tmp_path / "y.py",
    }
    bad["promptrec.core.x"].write_text("from promptrec.service.api import app\n")
    bad["promptrec.worker.y"].write_text("from ..service import inference\n")
    assert violations(package_edges(bad)) == ["core imports service", "worker imports service"]


def test_every_source_file_imports_the_project_through_its_namespace():
    """`import models` or `from service...` would import an installed package of that name,
    not ours: the project's modules are only reachable as promptrec.*."""
    bare = []
    for name, path in modules().items():
        for target in imported(name, path):
            if target.split(".")[0] in RANK:
                bare.append(f"{path.relative_to(ROOT)}: {target}")
    assert bare == []


def test_pyproject_installs_every_package_folder_under_the_namespace():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {
        ".".join((NAMESPACE, *init.parent.relative_to(ROOT).parts))
        for top in RANK
        for init in (ROOT / top).rglob("__init__.py")
    }
    assert set(config["packages"]) == folders
    assert config["package-dir"] == {f"{NAMESPACE}.{top}": top for top in RANK}
    folders_without_init = [
        d.relative_to(ROOT)
        for top in RANK
        for d in (ROOT / top).rglob("*")
        if d.is_dir() and d.name != "__pycache__" and any(d.glob("*.py"))
        if not (d / "__init__.py").exists()
    ]
    assert folders_without_init == []


@pytest.mark.parametrize("top", ["models", "core", "service", "worker", "cli", "tests", "bench"])
def test_no_source_file_is_over_400_lines(top):
    long = {
        str(path.relative_to(ROOT)): n
        for path in (ROOT / top).rglob("*.py")
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def test_the_wheel_installs_one_top_level_package(tmp_path):
    """What `pip install .` puts in site-packages: promptrec/ and its metadata, nothing else."""
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    subprocess.run([*pip_wheel, "-w", str(tmp_path), str(ROOT)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("promptrec-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    metadata = f"{wheel.name.split('-py')[0]}.dist-info"
    assert {n.split("/")[0] for n in names} == {"promptrec", metadata}
    assert "promptrec/core/db/tables.py" in names and "promptrec/cli/main.py" in names
