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
    tree = _load(text, source)
    for key, value in values.items():
        set_value(tree, key, value)
    return _dump(tree)


def _load(text: str, source: Path) -> CommentedMap:
    try:
        tree = _round_trip().load(text)
    except YAMLError as error:
        raise SlrpipeError(f"{source}: not valid YAML: {error}".replace("\n", " ")) from None
    if not isinstance(tree, CommentedMap):
        raise SlrpipeError(f"{source}: expected a mapping of sections at the top level")
    return tree


def _dump(tree: CommentedMap) -> str:
    buffer = io.StringIO()
    _round_trip().dump(tree, buffer)
    return buffer.getvalue()


DATASETS = "datasets"


def dataset_entries(values: dict[str, Any]) -> list[str]:
    """The dataset names a preset gives whole entries for (its `datasets.<name>` keys), in order."""
    return [key.split(".", 1)[1] for key in values if key.startswith(DATASETS + ".") and key.count(".") == 1]


def _entry_nodes(name: str) -> dict[str, Any]:
    """Preset `name`'s dataset entries as round-trip nodes, so the comments written beside them in
    presets.yaml reach params.yaml (the demo's entries are params.yaml's, comments and all)."""
    tree = _round_trip().load(resources.files("slrpipe").joinpath("presets.yaml").read_text(encoding="utf-8"))
    return {entry: tree[name][f"{DATASETS}.{entry}"] for entry in dataset_entries(tree[name])}


def parse_roots(given: list[str], entries: list[str], needing: list[str], preset: str) -> dict[str, str]:
    """`--root` values as dataset -> folder: `NAME=PATH` for any of the preset's `entries`, or a
    bare PATH when exactly one entry needs a root. Every entry in `needing` must get one."""
    roots: dict[str, str] = {}
    for item in given:
        name, _, path = item.partition("=")
        if path and name in entries:
            roots[name] = path
        elif len(needing) == 1 and needing[0] not in roots:
            roots[needing[0]] = item
        else:
            raise SlrpipeError(f"--root {item}: preset {preset} has {len(needing)} datasets without a folder "
                               f"({', '.join(needing) or 'none'}): give each as --root NAME=PATH, NAME one of "
                               f"{', '.join(entries) or 'none (this preset names no dataset)'}")
    missing = [name for name in needing if name not in roots]
    if missing:
        example = " ".join(f"--root {name}=PATH" for name in missing)
        raise SlrpipeError(f"preset {preset} needs --root for {', '.join(missing)}: the dataset folder ({example})")
    return roots


def _set_datasets(tree: CommentedMap, entries: dict[str, Any]) -> None:
    """Make params' `datasets:` section exactly `entries`: one already there is updated in place
    (its comments stay), a new one is the preset's node; the blank line after the section stays."""
    section = tree.get(DATASETS)
    if not isinstance(section, CommentedMap):
        raise SlrpipeError(f"params file has no {DATASETS}: section")
    ending = _section_ending(section)
    for name in [name for name in section if name not in entries]:
        del section[name]
    for name, entry in entries.items():
        section[name] = _like(section[name], entry) if name in section else entry
    _end_section(section, ending)


def _last_leaf(node: CommentedMap) -> tuple[CommentedMap, Any]:
    """The innermost mapping holding the section's last key, and that key: where ruamel keeps
    what follows the section (its blank line)."""
    key = list(node)[-1]
    while isinstance(node[key], CommentedMap) and len(node[key]) and not node[key].fa.flow_style():
        node = node[key]
        key = list(node)[-1]
    return node, key


def _section_ending(section: CommentedMap) -> Any:
    node, key = _last_leaf(section)
    slots = node.ca.items.get(key)
    return slots[2] if slots and len(slots) > 2 else None


def _end_section(section: CommentedMap, ending: Any) -> None:
    """Put the comment token that followed the section's old last key after its new last key."""
    node, key = _last_leaf(section)
    slots = node.ca.items.setdefault(key, [None, None, None, None])
    if ending is not None and "#" not in ending.value.split("\n", 1)[0]:
        slots[2] = ending  # a blank line (and any comment block) before the next section
    elif ending is None and slots[2] is not None and "#" not in slots[2].value.split("\n", 1)[0]:
        slots[2] = None  # a preset's own trailing blank lines or comments do not follow it


def apply_preset(params_path: Path, name: str, roots: list[str] | None = None) -> list[str]:
    """Write preset `name` into params_path; `roots`: the `--root` values (parse_roots) for its
    dataset entries that have no root. Returns the keys changed."""
    available = presets()
    if name not in available:
        raise SlrpipeError(f"unknown preset {name!r}: choose one of {', '.join(sorted(available))}")
    values = dict(available[name])
    entries = dataset_entries(values)
    needing = [entry for entry in entries if "root" not in values[f"{DATASETS}.{entry}"]]
    folders = parse_roots(list(roots or []), entries, needing, name)
    if not params_path.is_file():
        raise SlrpipeError(f"{params_path}: params file not found")
    tree = _load(params_path.read_text(encoding="utf-8"), params_path)
    if entries:
        nodes = _entry_nodes(name)
        for entry, folder in folders.items():
            if "root" in nodes[entry]:
                nodes[entry]["root"] = folder
            else:
                nodes[entry].insert(1, "root", folder)  # after source, as params.yaml lists them
        _set_datasets(tree, nodes)
    for key, value in values.items():
        if key.split(".", 1)[0] != DATASETS:
            set_value(tree, key, value)
    text = _dump(tree)
    parse_params(yaml.safe_load(text), params_path)  # the result must still be valid params
    params_path.write_text(text, encoding="utf-8")
    return sorted(values)
