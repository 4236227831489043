import yaml
from typer.testing import CliRunner

from slrpipe.config import load_params
from slrpipe.presets import dataset_entries, presets, set_values
from stages.cli import app
from tests.conftest import REPO

runner = CliRunner()


def test_paper_preset_then_demo_restores_params_exactly(tmp_path):
    params = tmp_path / "params.yaml"
    original = (REPO / "params.yaml").read_text()
    params.write_text(original)
    result = runner.invoke(app, ["preset", "msasl100", "--root", str(tmp_path / "msasl"), "--params", str(params)])
    assert result.exit_code == 0, result.output
    loaded = load_params(params)
    assert list(loaded.datasets) == ["msasl100"] and loaded.dataset("msasl100").source == "msasl"
    assert loaded.dataset("msasl100").num_classes == 100 and loaded.dataset("msasl100").root == tmp_path / "msasl"
    assert loaded.pretrain.corpus == ("msasl100",) and loaded.finetune.targets == ("msasl100",)
    assert loaded.model.size == "paper" and loaded.pretrain.epochs == 150 and loaded.pretrain.bank_size == 16384
    assert loaded.pretrain.lr_steps == (50, 100) and loaded.finetune.schedules["linear"].lr_steps == (50,)
    assert "# paper: 150" in params.read_text()  # comments survive
    runner.invoke(app, ["preset", "demo", "--params", str(params)])
    assert params.read_text() == original


def test_every_preset_gives_valid_params(tmp_path):
    for name, values in presets().items():
        params = tmp_path / f"{name}.yaml"
        params.write_text((REPO / "params.yaml").read_text())
        roots = [f"{entry}={tmp_path / entry}" for entry in dataset_entries(values) if "root" not in values[f"datasets.{entry}"]]
        result = runner.invoke(app, ["preset", name, *(a for r in roots for a in ("--root", r)), "--params", str(params)])
        assert result.exit_code == 0, (name, result.output)
        loaded = load_params(params)
        # A recipe's datasets replace the section; a form preset (authors, paper_forms) keeps the demo's.
        assert list(loaded.datasets) == (dataset_entries(values) or ["ksl13", "fydpasl"])
        assert set(loaded.finetune.targets) <= set(loaded.pretrain.corpus) == set(loaded.datasets)


def test_paper_preset_writes_the_four_dataset_corpus_with_a_root_each(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text((REPO / "params.yaml").read_text())
    four = ["msasl", "wlasl", "nmfs_csl", "slr500"]
    result = runner.invoke(app, ["preset", "paper", "--params", str(params), "--root", f"msasl={tmp_path / 'MSASL'}",
                                 "--root", f"wlasl={tmp_path / 'WLASL'}", "--root", f"nmfs_csl={tmp_path / 'nmfs'}"])
    assert result.exit_code == 1 and result.output.strip() == (
        "error: preset paper needs --root for slr500: the dataset folder (--root slr500=PATH)")
    assert params.read_text() == (REPO / "params.yaml").read_text()  # nothing written
    result = runner.invoke(app, ["preset", "paper", "--params", str(params), "--root", str(tmp_path)])
    assert result.exit_code == 1 and "give each as --root NAME=PATH" in result.output
    roots = [a for name in four for a in ("--root", f"{name}={tmp_path / name.upper()}")]
    result = runner.invoke(app, ["preset", "paper", "--params", str(params), *roots])
    assert result.exit_code == 0, result.output
    loaded = load_params(params)
    assert list(loaded.datasets) == four and loaded.pretrain.corpus == tuple(four) and loaded.finetune.targets == tuple(four)
    assert [loaded.dataset(name).source for name in four] == four
    assert all(loaded.dataset(name).root == tmp_path / name.upper() for name in four)
    assert loaded.dataset("msasl").num_classes is None and loaded.dataset("wlasl").num_classes is None
    assert all(loaded.dataset(name).labelled for name in four) and loaded.pretrain.corpus_fraction == 1.0
    assert loaded.model.size == "paper" and loaded.pretrain.epochs == 150 and loaded.evaluate.topk == (1, 2, 5)
    # The demo's entries come back with their comments: the file is the shipped one again.
    runner.invoke(app, ["preset", "demo", "--params", str(params)])
    assert params.read_text() == (REPO / "params.yaml").read_text()
    demo = load_params(params)
    assert demo.pretrain.corpus == ("ksl13", "fydpasl") and demo.finetune.targets == ("ksl13",)
    assert not demo.dataset("fydpasl").labelled


def test_unknown_preset_and_missing_root_are_one_line(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text((REPO / "params.yaml").read_text())
    result = runner.invoke(app, ["preset", "wlasl9000", "--params", str(params)])
    assert result.exit_code == 1 and result.output.startswith("error: unknown preset 'wlasl9000': choose one of authors, demo,")
    result = runner.invoke(app, ["preset", "slr500", "--params", str(params)])
    assert result.exit_code == 1 and result.output.strip() == (
        "error: preset slr500 needs --root for slr500: the dataset folder (--root slr500=PATH)")


def test_set_values_keeps_comments_flow_style_and_nested_keys():
    text = "a:\n  b: 1   # why\n  c:\n    d: {x: 1}\n  n: null\ne: [3]  # three\n"
    changed = set_values(text, {"a.b": [50, 100], "a.c.d": {"x": 2, "y": []}, "e": [4, 5]})
    assert changed == "a:\n  b: [50, 100] # why\n  c:\n    d: {x: 2, y: []}\n  n: null\ne: [4, 5] # three\n"
    assert yaml.safe_load(changed)["a"]["c"]["d"] == {"x": 2, "y": []}


def test_preset_applies_to_params_that_dvc_exp_run_set_rewrote(tmp_path):
    """`dvc exp run -S` rewrites params.yaml with its own YAML dumper: lists in block style,
    null as nothing, quotes dropped. DVC's own override code makes that rewrite here."""
    from dvc.utils.hydra import apply_overrides

    params = tmp_path / "params.yaml"
    params.write_text((REPO / "params.yaml").read_text())
    apply_overrides(params, ["pretrain.lr_steps=[50,100]", "pretrain.epochs=2", "datasets.ksl13.frame_size=[320,240]",
                             "finetune.schedules.linear={epochs:5,lr_steps:[3]}"])
    rewritten = params.read_text()
    assert "\n  - 50\n  - 100\n" in rewritten and "  num_classes:\n" in rewritten  # the layout dvc writes
    result = runner.invoke(app, ["preset", "demo", "--params", str(params)])
    assert result.exit_code == 0, result.output
    loaded, demo = load_params(params).model_dump(), load_params(REPO / "params.yaml").model_dump()
    for name in ("ksl13", "fydpasl"):
        root = demo["datasets"][name].pop("root")
        assert loaded["datasets"][name].pop("root") == tmp_path / root.relative_to(REPO)
    assert loaded == demo
    assert "# paper: [50, 100]; authors' code: [100]" in params.read_text()  # comments survive both rewrites
    # And a paper preset on top of it.
    result = runner.invoke(app, ["preset", "wlasl100", "--root", str(tmp_path), "--params", str(params)])
    assert result.exit_code == 0, result.output
    assert load_params(params).pretrain.lr_steps == (50, 100) and load_params(params).dataset("wlasl100").num_classes == 100


# Keys whose params.yaml comment names the authors' code but that the `authors` preset leaves
# alone, and why: they are numbers of a training recipe, not forms (the dataset presets set them;
# on the demo the authors' lr step at epoch 100 would not even fit its 30 epochs).
NOT_FORMS = {
    "pretrain.lr_steps": "recipe: the authors' lr schedule",
    "finetune.schedules": "recipe: the authors' 80 fine-tuning epochs",
    "model.sizes.paper": "recipe: the paper size's widths (the block forms are the model.* switches)",
    "datasets.ksl13.pretrain_splits": "per dataset: the authors' code reads train + val of WLASL and MS-ASL only",
}


def _keys_whose_comment_mentions(text: str, phrase: str) -> list[str]:
    """Dotted keys of a YAML file whose inline comment, or the comment block right above them,
    contains `phrase` (case-insensitive)."""
    import re

    found, path, pending = [], [], []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            pending.append(stripped.lstrip("#").strip())
            continue
        match = re.match(r"^( *)(\w+):(.*)$", line)
        if not match:  # a blank line ends a comment block
            pending = []
            continue
        indent, key, rest = len(match.group(1)), match.group(2), match.group(3)
        path = [(i, k) for i, k in path if i < indent] + [(indent, key)]
        comment = " ".join(pending + [rest.split("#", 1)[1] if "#" in rest else ""])
        if phrase in comment.lower():
            found.append(".".join(k for _, k in path))
        pending = []
    return found


def test_the_authors_preset_sets_every_switch_a_comment_names():
    text = (REPO / "params.yaml").read_text()
    named = _keys_whose_comment_mentions(text, "authors'")
    assert {"augment.motion_source", "preprocess.fallback_box", "finetune.select", "pretrain.gather_keys"} <= set(named)
    authors = presets()["authors"]
    for key in named:
        if key in NOT_FORMS:
            continue
        # A comment on a section (augment.finetune) is covered by the keys set under it.
        assert key in authors or any(k.startswith(key + ".") for k in authors), f"{key}: its comment names the authors' code"


def test_paper_forms_are_params_yaml_defaults_and_undo_authors(tmp_path):
    authors, paper = presets()["authors"], presets()["paper_forms"]
    assert set(authors) == set(paper)
    assert any(authors[key] != paper[key] for key in authors)
    shipped = yaml.safe_load((REPO / "params.yaml").read_text())

    def value(key):
        node = shipped
        for part in key.split("."):
            node = node[part]
        return node
    assert {key: value(key) for key in paper} == paper

    params = tmp_path / "params.yaml"
    original = (REPO / "params.yaml").read_text()
    params.write_text(original)
    result = runner.invoke(app, ["preset", "authors", "--params", str(params)])  # no --root: forms only
    assert result.exit_code == 0, result.output
    loaded = load_params(params)
    assert loaded.augment.motion_source == "view" and loaded.augment.test_crop == 0.95
    assert loaded.augment.pretrain.spatial == "corrupt_or_shear" and loaded.augment.finetune.crop_min_frames == 64
    assert loaded.preprocess.fallback_box == "official" and loaded.finetune.select == "test"
    assert loaded.model.form.gcn_block == "stgcn" and loaded.model.form.hand_parts == "three_joint_fingers"
    shipped_params = load_params(REPO / "params.yaml")
    assert loaded.datasets == {name: d.model_copy(update={"root": tmp_path / d.root.relative_to(REPO)})
                               for name, d in shipped_params.datasets.items()}  # forms only: the datasets stay
    runner.invoke(app, ["preset", "paper_forms", "--params", str(params)])
    assert params.read_text() == original
