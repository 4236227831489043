"""Paper presets: write a named set of values into params.yaml, keeping its layout and comments."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from slrpipe.config import parse_params
from slrpipe.errors import SlrpipeError


def presets() -> dict[str, dict[str, Any]]:
    data = yaml.safe_load(resources.files("slrpipe").joinpath("presets.yaml").read_text(encoding="utf-8"))
    return {name: values for name, values in data.items() if not name.startswith("_")}


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _is_content(line: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and not stripped.startswith("#")


def _flow(value: Any) -> str:
    """One-line YAML for a value: 150, msasl, [50, 100], {epochs: 60, lr_steps: []}, null."""
    return yaml.safe_dump(value, default_flow_style=True, width=10**6, sort_keys=False).removesuffix("...\n").strip()


def set_value(text: str, key: str, value: Any) -> str:
    """Replace the value of dotted `key` in block-style YAML text; the line's comment stays."""
    lines = text.splitlines(keepends=True)
    start, stop, indent = 0, len(lines), 0
    parts = key.split(".")
    for depth, part in enumerate(parts):
        pattern = re.compile(rf"^ {{{indent}}}{re.escape(part)}:(?=\s|$)")
        found = next((i for i in range(start, stop) if pattern.match(lines[i])), None)
        if found is None:
            raise SlrpipeError(f"params file has no key {key}")
        if depth == len(parts) - 1:
            match = re.match(r"^(\s*[^:]+:)([^#\n]*?)(\s+#.*)?(\n?)$", lines[found])
            comment = match.group(3) or ""
            lines[found] = f"{match.group(1)} {_flow(value)}{comment}{match.group(4)}"
            return "".join(lines)
        # Descend into the block under this key: the lines indented deeper than it.
        start = found + 1
        stop = next((i for i in range(start, len(lines)) if _is_content(lines[i]) and _indent(lines[i]) <= indent), len(lines))
        inner = [lines[i] for i in range(start, stop) if _is_content(lines[i])]
        if not inner:
            raise SlrpipeError(f"params file has no key {key}")
        indent = _indent(inner[0])
    raise AssertionError("unreachable")


def apply_preset(params_path: Path, name: str, root: Path | None) -> list[str]:
    """Write preset `name` (and the dataset root) into params_path; returns the keys changed."""
    available = presets()
    if name not in available:
        raise SlrpipeError(f"unknown preset {name!r}: choose one of {', '.join(sorted(available))}")
    values = dict(available[name])
    if root is not None:
        values["dataset.root"] = str(root)
    elif "dataset.root" not in values:
        raise SlrpipeError(f"preset {name} needs --root: the folder of the {values['dataset.source']} dataset")
    text = params_path.read_text(encoding="utf-8")
    for key, value in values.items():
        text = set_value(text, key, value)
    parse_params(yaml.safe_load(text), params_path)  # the result must still be valid params
    params_path.write_text(text, encoding="utf-8")
    return sorted(values)
