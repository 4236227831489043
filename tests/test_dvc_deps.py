"""dvc.yaml names every source file each stage runs, so that changing one reruns that stage.

A stage's code is found two ways: the `slrpipe` and `stages` modules loaded by importing the
stage's command module in a fresh interpreter, and, for imports made lazily inside functions
(video backends, optional NMFs-CSL subsets), every `import` statement anywhere in those
modules' source, followed recursively. Each such file must be one of the stage's deps or lie
in a folder that is.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

PACKAGES = ("slrpipe", "stages")


def _stages() -> dict[str, dict]:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def _module_file(name: str) -> Path | None:
    """The source file of module `name` in this repository, or None when it is not one of ours."""
    if name.split(".")[0] not in PACKAGES:
        return None
    base = REPO.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported_by(path: Path) -> set[Path]:
    """Our modules that `path` imports anywhere in its source, with the packages that hold them."""
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{anchor}.{node.module}" if node.module else anchor
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)  # `from pkg import submodule`
    found = set()
    for name in names:
        parts = name.split(".")
        for end in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__ too
            if (file := _module_file(".".join(parts[:end]))) is not None:
                found.add(file)
    return found


# Imports each stage's module in turn in one fresh interpreter; between stages our modules are
# dropped from sys.modules (third-party ones, torch above all, stay loaded: they are slow to
# import and not ours), so each stage's list holds exactly the modules it loads itself.
_LOADER = """
import importlib, json, sys
ours = lambda name: name.split(".")[0] in ("slrpipe", "stages")
result = {}
for module in sys.argv[1:]:
    for name in [name for name in sys.modules if ours(name)]:
        del sys.modules[name]
    importlib.import_module(module)
    result[module] = sorted(m.__file__ for n, m in list(sys.modules.items()) if ours(n) and getattr(m, "__file__", None))
print(json.dumps(result))
"""


def _loaded_on_import(modules: list[str]) -> dict[str, list[str]]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    completed = subprocess.run([sys.executable, "-c", _LOADER, *modules], cwd=REPO, env=env, capture_output=True,
                               text=True, timeout=300, check=False)
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout)


def _code_of(loaded: list[str]) -> set[Path]:
    files = {Path(name).resolve() for name in loaded}
    queue = list(files)
    while queue:
        for found in _imported_by(queue.pop()) - files:
            files.add(found)
            queue.append(found)
    return files


def _trivial(path: Path) -> bool:
    """A package __init__ holding only a docstring and a version string: no code a stage runs."""
    body = ast.parse(path.read_text(encoding="utf-8")).body
    return all(isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) or
               isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["__version__"]
               for node in body)


def _covered(relative: str, deps: list[str]) -> bool:
    return any(relative == dep.rstrip("/") or relative.startswith(dep.rstrip("/") + "/") for dep in deps)


def test_every_stage_lists_the_code_it_runs():
    stages = _stages()
    modules = {}
    stages = {name: stage.get("do", stage) for name, stage in stages.items()}  # a foreach stage's template
    for name, stage in stages.items():
        command = stage["cmd"].split()
        assert command[:2] == ["python", "-m"] and command[2].startswith("stages."), (name, stage["cmd"])
        modules[name] = command[2]
    loaded = _loaded_on_import(list(modules.values()))
    missing = {}
    for name, stage in stages.items():
        deps = [dep for dep in stage.get("deps", []) if "${" not in dep]
        code = _code_of(loaded[modules[name]])
        assert REPO / Path(*modules[name].split(".")).with_suffix(".py") in code
        uncovered = sorted(
            relative for path in code
            if not _covered(relative := path.relative_to(REPO).as_posix(), deps)
            and not (path.name == "__init__.py" and _trivial(path))
        )
        if uncovered:
            missing[name] = uncovered
    assert not missing, f"dvc.yaml deps lack the code these stages run: {missing}"


def test_the_walk_finds_lazy_imports():
    """The AST walk sees imports inside functions, which importing the module does not run."""
    code = _code_of([str(REPO / "slrpipe" / "pose" / "extract.py")])
    assert REPO / "slrpipe" / "pose" / "backends" / "mmpose_backend.py" in code
    assert REPO / "slrpipe" / "pose" / "backends" / "__init__.py" in code


@pytest.mark.parametrize("relative, deps, expected", [
    ("slrpipe/pose/sources/local.py", ["slrpipe/pose/sources"], True),
    ("slrpipe/pose/sources/local.py", ["slrpipe/source"], False),
    ("slrpipe/h5io.py", ["slrpipe/h5io.py"], True),
])
def test_coverage_rule(relative, deps, expected):
    assert _covered(relative, deps) is expected
