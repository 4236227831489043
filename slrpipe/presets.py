"""Paper presets: write a named set of values into params.yaml, keeping its layout and comments.

params.yaml is edited as a YAML tree (ruamel.yaml's round trip, the library DVC itself uses),
not as lines of text: `dvc exp run -S` rewrites the file (block-style lists, `null` written as
nothing), and a preset must still apply to what it left. Values are changed in place where
the old node has the same type, so a flow list stays a flow list and a comment stays on its line.
"""

from __future__ import annotations

import io
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError
from ruamel.yaml.representer import RoundTripRepresenter

from slrpipe.config import parse_params
from slrpipe.errors import SlrpipeError


def presets() -> dict[str, dict[str, Any]]:
    data = yaml.safe_load(resources.files("slrpipe").joinpath("presets.yaml").read_text(encoding="utf-8"))
    return {name: values for name, values in data.items() if not name.startswith("_")}


class _Representer(RoundTripRepresenter):
    """ruamel writes None as nothing (`key:`); params.yaml says null, as its comments do. A
    subclass, since add_representer on ruamel's own class would change DVC's output too."""


_Representer.add_representer(type(None), lambda self, _: self.represent_scalar("tag:yaml.org,2002:null", "null"))


def _round_trip() -> YAML:
    handler = YAML()  # round trip: comments, key order, quotes and flow/block style survive
    handler.Representer = _Representer
    handler.preserve_quotes = True
    handler.width = 4096  # never wrap a long value or comment onto a second line
    return handler


def _like(old: Any, value: Any) -> Any:
    """`value` as a node that keeps `old`'s formatting when both are lists or both mappings."""
    if isinstance(value, dict):
        node = old if isinstance(old, CommentedMap) else CommentedMap()
        for key in [key for key in node if key not in value]:
            del node[key]
        for key, item in value.items():
            node[key] = _like(node.get(key), item)
        if not isinstance(old, CommentedMap):
            node.fa.set_flow_style()  # a new mapping is written on its line, as the presets give it
        return node
    if isinstance(value, list):
        node = old if isinstance(old, CommentedSeq) else CommentedSeq()
        node[:] = [_like(None, item) for item in value]
        if not isinstance(old, CommentedSeq):
            node.fa.set_flow_style()
        return node
    return value


def set_value(tree: CommentedMap, key: str, value: Any) -> None:
    """Set dotted `key` (e.g. finetune.schedules.linear) of a round-trip tree; the key must exist."""
    *parents, leaf = key.split(".")
    node = tree
    for part in parents:
        node = node.get(part) if isinstance(node, dict) else None
    if not isinstance(node, dict) or leaf not in node:
        raise SlrpipeError(f"params file has no key {key}")
    node[leaf] = _like(node[leaf], value)


def set_values(text: str, values: dict[str, Any], source: Path = Path("params.yaml")) -> str:
    """`text` (a params file) with dotted keys set to `values`, comments and layout kept."""
    handler = _round_trip()
    try:
        tree = handler.load(text)
    except YAMLError as error:
        raise SlrpipeError(f"{source}: not valid YAML: {error}".replace("\n", " ")) from None
    if not isinstance(tree, CommentedMap):
        raise SlrpipeError(f"{source}: expected a mapping of sections at the top level")
    for key, value in values.items():
        set_value(tree, key, value)
    buffer = io.StringIO()
    handler.dump(tree, buffer)
    return buffer.getvalue()


def apply_preset(params_path: Path, name: str, root: Path | None) -> list[str]:
    """Write preset `name` (and the dataset root) into params_path; returns the keys changed."""
    available = presets()
    if name not in available:
        raise SlrpipeError(f"unknown preset {name!r}: choose one of {', '.join(sorted(available))}")
    values = dict(available[name])
    if root is not None:
        values["dataset.root"] = str(root)
    elif "dataset.source" in values and "dataset.root" not in values:
        # A recipe names a dataset, so it needs its folder; a form preset (authors) keeps the one set.
        raise SlrpipeError(f"preset {name} needs --root: the folder of the {values['dataset.source']} dataset")
    if not params_path.is_file():
        raise SlrpipeError(f"{params_path}: params file not found")
    text = set_values(params_path.read_text(encoding="utf-8"), values, params_path)
    parse_params(yaml.safe_load(text), params_path)  # the result must still be valid params
    params_path.write_text(text, encoding="utf-8")
    return sorted(values)
