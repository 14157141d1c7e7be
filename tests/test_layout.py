"""The installed layout: every package lives under the ``dashflow`` namespace, imports flow one
way, and no script edits the import path."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"tokenizer": "tokenizer", "text_encoders": "text_encoders", "generation": "generation",
           "eval": "eval", "plumbing": "dashflow"}
# which dashflow packages each may import (the plumbing's CLI home registers every subcommand)
ALLOWED = {"tokenizer": set(), "text_encoders": set(), "generation": {"tokenizer", "text_encoders"},
           "eval": set(), "plumbing": set()}
PACKAGES = {"tokenizer", "text_encoders", "generation", "eval"}


def dashflow_imports(path: Path) -> set[str]:
    """The dashflow packages a module imports (``dashflow.<package>...``), at any depth."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                 else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
        if isinstance(node, ast.ImportFrom) and node.module == "dashflow":
            names = [f"dashflow.{alias.name}" for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "dashflow" and len(parts) > 1 and parts[1] in PACKAGES:
                found.add(parts[1])
    return found


@pytest.mark.parametrize("package", sorted(FOLDERS))
def test_imports_flow_one_way(package):
    bad = {}
    for path in (ROOT / FOLDERS[package]).rglob("*.py"):
        if package == "plumbing" and (path.name == "cli.py" or path.parent.name == "commands"):
            continue  # the CLI home composes the packages
        own = {package} if package in PACKAGES else set()
        extra = dashflow_imports(path) - ALLOWED[package] - own
        if extra:
            bad[str(path.relative_to(ROOT))] = sorted(extra)
    assert not bad, bad


def test_installed_names_are_namespaced(tmp_path):
    """From a folder outside the repository only ``dashflow`` is importable, not generic names."""
    code = ("import importlib.util as u, dashflow.tokenizer, dashflow.generation, dashflow.eval, "
            "dashflow.text_encoders; print([n for n in ('tokenizer', 'eval', 'generation', 'text_encoders') "
            "if u.find_spec(n)])")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_no_script_edits_the_import_path():
    edits = [str(path.relative_to(ROOT)) for folder in ("recipes", "benchmarks", *FOLDERS.values())
             for path in (ROOT / folder).rglob("*.py") if "sys.path" in path.read_text()]
    assert not edits


def test_the_command_lines_parse_without_importing_torch():
    """``dashflow``, ``generate`` and ``enhance`` build their parsers (and so answer --help and
    reject bad arguments) before anything heavy is imported."""
    code = ("import sys; from dashflow.cli import build_parser; from dashflow.generation.cli import generate, enhance; "
            "build_parser(); generate.build_generate_parser(); enhance.build_parser(); "
            "heavy = [m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules]; assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_wheel_leaves_out_exactly_the_linked_copies_of_the_bundled_demo():
    """Wheels copy a symlink's target; the task folders' links to the shared DiT, tokenizer ... are
    excluded (our loader finds a missing component beside them), the stored files are not."""
    import glob
    import tomllib

    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    package = setup["package-dir"]["dashflow.generation"]
    excluded = {Path(p) for pattern in setup["exclude-package-data"]["dashflow.generation"]
                for p in glob.glob(str(ROOT / package / pattern), recursive=True)
                if Path(p).is_file() and "__pycache__" not in p}
    demo = ROOT / package / "demo" / "pipeline"
    linked = {path for task in demo.iterdir() if task.is_dir() for link in task.iterdir() if link.is_symlink()
              for path in link.rglob("*") if path.is_file()}
    assert linked, "the bundled demo stores its shared components once, linked from each task folder"
    assert excluded == linked
    weights = {path for path in demo.rglob("*.safetensors") if not any(p.is_symlink() for p in path.parents)}
    assert len(weights) >= 3 and not weights & excluded
