"""The installed package: one top-level name, no import circles, modules of one job each, and a
wheel that works from a fresh virtual environment."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
STAGES = ("core", "advisor", "search", "export", "dashboard", "pipeline")
PACKAGES = {"finetune_advisor": ROOT / "finetune_advisor", **{f"finetune_advisor.{s}": ROOT / s for s in STAGES}}


def module_imports() -> dict[str, set[str]]:
    """{module: the package modules it imports}, function-level imports included (a circle through a
    lazy import still makes the layout lie about who depends on whom)."""
    modules = {}
    for package, folder in PACKAGES.items():
        for file in folder.glob("*.py"):
            name = package if file.stem == "__init__" else f"{package}.{file.stem}"
            modules[name] = (file, package)
    graph = {}
    for name, (file, package) in modules.items():
        found = set()
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                targets = [f"{base}.{a.name}" for a in node.names] + [base]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            found |= {t for t in targets if t in modules and t != name}
        graph[name] = found
    return graph


def test_no_import_circle_between_modules():
    graph = module_imports()
    # a package's __init__ re-exports its modules: the edge module -> its own package is not a dependency
    for name in graph:
        graph[name] = {t for t in graph[name] if not name.startswith(t + ".")}
    seen, stack, cycles = set(), [], []

    def visit(node):
        if node in stack:
            cycles.append(stack[stack.index(node):] + [node])
            return
        if node in seen:
            return
        seen.add(node)
        stack.append(node)
        for target in sorted(graph[node]):
            visit(target)
        stack.pop()

    for node in sorted(graph):
        visit(node)
    assert not cycles, "import circles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_no_product_module_is_over_450_lines():
    long = {str(f.relative_to(ROOT)): n for folder in PACKAGES.values() for f in folder.glob("*.py")
            if (n := len(f.read_text().splitlines())) > 450}
    assert not long, long


def test_the_public_api_is_one_import_and_light():
    code = ("import sys; from finetune_advisor import (advise, search, export, Predictor, AdvisorConfig, SearchConfig,"
            " DataConfig, AdviceRecord, SearchRecord, ExportRecord, RunRecord, TrialRecord, load_task);"
            " print(callable(search), callable(export), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "True", "False"]


@pytest.mark.slow
def test_a_built_wheel_installs_one_package_that_runs_the_demo(tmp_path):
    """Build the wheel, install it into a fresh venv (its dependencies from this environment), and
    use it from a folder outside the checkout: finetune_advisor imports, the stage folders do not,
    the package data is inside, and the demo `run` works."""
    import shutil

    source, wheels = tmp_path / "source", tmp_path / "wheels"  # built from a copy: no build/ left in the checkout
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "finetune_advisor", *STAGES):
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels),
                    str(source)], check=True, capture_output=True, text=True)
    (wheel,) = wheels.glob("finetune_advisor-*.whl")
    import zipfile

    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"finetune_advisor"}
    for data in ("finetune_advisor/core/demo/fashion-mnist.npz", "finetune_advisor/advisor/forecast.json",
                 "finetune_advisor/advisor/forecast_image.json",
                 "finetune_advisor/advisor/reference.txt"):
        assert data in names
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    # the dependencies: this environment's site-packages as a plain path (its .pth files, the
    # editable install of this checkout among them, are not run there)
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--ignore-installed", str(wheel)],
                   check=True, capture_output=True, text=True)
    away = tmp_path / "elsewhere"
    away.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    check = ("import importlib.util as u, finetune_advisor as f; print(f.__file__); "
             "print([m for m in ('core', 'search', 'export', 'pipeline', 'advisor', 'dashboard') if u.find_spec(m)])")
    out = subprocess.run([python, "-c", check], cwd=away, env=env, capture_output=True, text=True, check=True).stdout
    where, found = out.splitlines()
    assert str(env_dir) in where and found == "[]"
    result = subprocess.run([env_dir / "bin" / "finetune-advisor", "run", "--out", "runs/demo", "--max-rows", "150",
                             "--max-length", "32", "--trials", "2", "--force-search"],
                            cwd=away, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (away / "runs" / "demo" / "export" / "export.json").exists()
