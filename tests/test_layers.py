"""Imports point down (../shared/DESIGN.md): each layer imports only the layers below it."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BASE = {"crystal", "datasets", "files", "options", "targets"}
ALLOWED = {  # layer -> the layers it may import
    "base": {"base"},
    "policies": {"base", "policies"},
    "rewards": {"base", "rewards"},
    "envs": {"base", "policies", "rewards", "envs"},
    "agents": {"base", "policies", "rewards", "envs", "agents", "benchmarks.metrics"},
    "benchmarks": {"base", "policies", "rewards", "envs", "agents", "benchmarks", "benchmarks.metrics"},
    "benchmarks.metrics": {"base"},  # a leaf, so the trainer may use it
}


def layer(parts: tuple[str, ...]) -> str:
    if parts[0] in BASE:
        return "base"
    if parts[:2] == ("benchmarks", "metrics"):
        return "benchmarks.metrics"
    return parts[0]


def imported(path: Path) -> set[tuple[str, ...]]:
    """The package modules a file imports, as paths from the package root."""
    here = path.relative_to(ROOT).with_suffix("").parts
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            anchor = here[: len(here) - node.level]
            target = anchor + tuple((node.module or "").split(".")) if node.module else anchor
            found |= {target} if node.module else {anchor + (alias.name,) for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("latticegym."):
            found.add(tuple(node.module.split(".")[1:]))
    return {t for t in found if t}


def test_every_module_imports_only_the_layers_below_it():
    wrong = []
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT).parts
        if parts[0] in ("tests", "build", "docs", "scripts") or parts[0].startswith(".") or len(parts) == 1 and path.stem in ("__init__", "cli"):
            continue
        allowed = ALLOWED[layer(path.relative_to(ROOT).with_suffix("").parts)]
        for target in imported(path):
            if layer(target) not in allowed:
                wrong.append(f"{path.relative_to(ROOT)} imports {'.'.join(target)}")
    assert not wrong, wrong


@pytest.mark.parametrize(
    "code",
    [
        "import latticegym.crystal, latticegym.datasets, latticegym.policies, latticegym.rewards, sys; assert 'gymnasium' not in sys.modules",
        "import latticegym, gymnasium; assert 'LatticeGym/PerovskiteLowHHI-v0' in gymnasium.registry",
        "import gymnasium, latticegym; assert 'LatticeGym/Custom-v0' in gymnasium.registry",
        "import latticegym.envs.registration, gymnasium; assert 'LatticeGym/PerovskiteMagnet-v0' in gymnasium.registry",
    ],
)
def test_the_base_layers_load_without_gymnasium_and_the_ids_register_whichever_comes_first(code):
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
