"""A plain `pip install .` gets every module: the wheel built from this tree holds every Python
file under flows/ and tasks/ (a listed package set once left the subpackages out)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


def test_the_built_wheel_holds_every_module_of_flows_and_tasks(tmp_path):
    """Built from a fresh copy of the tree: a `build/` folder left by an earlier build would
    otherwise be packed again and hide a missing package."""
    tree = tmp_path / "tree"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for top in ("flows", "tasks"):
        shutil.copytree(ROOT / top, tree / top, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tree / name)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", str(tree), "--no-deps", "--no-build-isolation",
                            "--quiet", "--wheel-dir", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = tmp_path.glob("transferflow-*.whl")
    packaged = {name for name in zipfile.ZipFile(wheel).namelist() if name.endswith(".py")}
    source = {str(path.relative_to(ROOT)) for top in ("flows", "tasks") for path in (ROOT / top).rglob("*.py")
              if "__pycache__" not in path.parts}
    assert len(source) > 90
    assert source - packaged == set(), f"missing from the wheel: {sorted(source - packaged)}"
