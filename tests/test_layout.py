"""The folder tree is the pipeline: imports only run downward through the wings, and no stage
module imports another stage's module."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Lowest first. A module may import its own wing and the wings below it, never one above or a
# peer on the same level (pretrain and finetune share only what lies beneath them).
LEVELS = (
    ("slrpipe",),  # the foundation: config, errors, h5io and the project commands (presets, extras)
    ("engine",),
    ("pose",),
    ("data",),
    ("model",),
    ("pretrain", "finetune"),
    ("evaluation",),
    ("stages",),
)
RANK = {wing: level for level, wings in enumerate(LEVELS) for wing in wings}


def wing_of(module: str) -> str:
    """'slrpipe.pose.extract' -> 'pose'; 'slrpipe.config' -> 'slrpipe'; 'stages.report' -> 'stages'."""
    parts = module.split(".")
    if parts[0] == "stages":
        return "stages"
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in RANK) else "slrpipe"


def module_name(path: Path) -> str:
    relative = path.relative_to(REPO).with_suffix("")
    parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
    return ".".join(parts)


def imports_of(source: str) -> set[str]:
    """Every slrpipe / stages module the source imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.split(".")[0] in ("slrpipe", "stages") and _exists(name)}


def _exists(module: str) -> bool:
    base = REPO.joinpath(*module.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def upward_imports(sources: dict[str, str]) -> list[str]:
    """'importer (wing) imports imported (wing)' for each import of a wing above or beside its own."""
    wrong = []
    for importer, source in sources.items():
        own = wing_of(importer)
        for imported in sorted(imports_of(source)):
            wing = wing_of(imported)
            if wing != own and RANK[wing] >= RANK[own]:
                wrong.append(f"{importer} ({own}) imports {imported} ({wing})")
    return wrong


def sources(*folders: str) -> dict[str, str]:
    return {module_name(path): path.read_text(encoding="utf-8")
            for folder in folders for path in sorted((REPO / folder).rglob("*.py"))}


def test_every_library_and_stage_import_runs_downward():
    assert upward_imports(sources("slrpipe", "stages")) == []


def test_no_stage_module_imports_another_stage_module():
    # stages.cli gathers the commands and stages.common holds their shared option helpers.
    shared = {"stages", "stages.common", "stages.cli"}
    wrong = [f"{module} imports {name}" for module, source in sources("stages").items() if module != "stages.cli"
             for name in imports_of(source) if name.startswith("stages") and name not in shared]
    assert wrong == []


@pytest.mark.parametrize("source, expected", [
    ("from slrpipe.data.dataset import PoseDataset\nfrom slrpipe.engine import loop\n", []),
    ("from slrpipe.pretrain.model import Pretrainer\n", ["slrpipe.model.fake (model) imports slrpipe.pretrain.model (pretrain)"]),
    ("from slrpipe.evaluation.metrics import evaluate\n", ["slrpipe.model.fake (model) imports slrpipe.evaluation.metrics (evaluation)"]),
    ("def f():\n    from slrpipe.finetune import train\n", ["slrpipe.model.fake (model) imports slrpipe.finetune (finetune)",
                                                            "slrpipe.model.fake (model) imports slrpipe.finetune.train (finetune)"]),
])
def test_the_check_sees_an_upward_import(source, expected):
    """A model-wing module importing from above is reported, even inside a function."""
    assert upward_imports({"slrpipe.model.fake": source}) == expected


def test_peers_may_not_import_each_other():
    assert wing_of("slrpipe.pretrain.train") == "pretrain" and RANK["pretrain"] == RANK["finetune"]
    assert wing_of("slrpipe.config") == "slrpipe" and wing_of("slrpipe.pose") == "pose" and wing_of("stages.cli") == "stages"


def test_every_data_file_of_the_library_is_package_data():
    # An installed slrpipe has only the files pyproject.toml declares: a template or table read at
    # run time (the report's results_template.md, the paper's numbers) must be declared there.
    import tomllib

    globs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["slrpipe"]
    package = REPO / "slrpipe"
    data = [path.relative_to(package) for path in package.rglob("*")
            if path.is_file() and path.suffix not in (".py", ".pyc") and "__pycache__" not in path.parts]
    assert data, "no data files found under slrpipe/"
    assert [path.as_posix() for path in data if not any(path.match(glob) for glob in globs)] == []
