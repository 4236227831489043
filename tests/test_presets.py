import yaml
from typer.testing import CliRunner

from slrpipe.config import load_params
from slrpipe.presets import presets, set_values
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
    assert loaded.dataset.source == "msasl" and loaded.dataset.num_classes == 100
    assert loaded.model.size == "paper" and loaded.pretrain.epochs == 150 and loaded.pretrain.bank_size == 16384
    assert loaded.pretrain.lr_steps == (50, 100) and loaded.finetune.schedules["linear"].lr_steps == (50,)
    assert "# paper: 150" in params.read_text()  # comments survive
    runner.invoke(app, ["preset", "demo", "--params", str(params)])
    assert params.read_text() == original


def test_every_preset_gives_valid_params(tmp_path):
    for name in presets():
        params = tmp_path / f"{name}.yaml"
        params.write_text((REPO / "params.yaml").read_text())
        result = runner.invoke(app, ["preset", name, "--root", str(tmp_path), "--params", str(params)])
        assert result.exit_code == 0, (name, result.output)


def test_unknown_preset_and_missing_root_are_one_line(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text((REPO / "params.yaml").read_text())
    result = runner.invoke(app, ["preset", "wlasl9000", "--params", str(params)])
    assert result.exit_code == 1 and result.output.startswith("error: unknown preset 'wlasl9000': choose one of authors, demo,")
    result = runner.invoke(app, ["preset", "slr500", "--params", str(params)])
    assert result.exit_code == 1 and "needs --root" in result.output


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
    apply_overrides(params, ["pretrain.lr_steps=[50,100]", "pretrain.epochs=2", "dataset.frame_size=[320,240]",
                             "finetune.schedules.linear={epochs:5,lr_steps:[3]}"])
    rewritten = params.read_text()
    assert "\n  - 50\n  - 100\n" in rewritten and "  num_classes:\n" in rewritten  # the layout dvc writes
    result = runner.invoke(app, ["preset", "demo", "--params", str(params)])
    assert result.exit_code == 0, result.output
    loaded, demo = load_params(params).model_dump(), load_params(REPO / "params.yaml").model_dump()
    assert loaded["dataset"].pop("root") == tmp_path / "data" / "demo" and demo["dataset"].pop("root") == REPO / "data" / "demo"
    assert loaded == demo
    assert "# paper: [50, 100]; authors' code: [100]" in params.read_text()  # comments survive both rewrites
    # And a paper preset on top of it.
    result = runner.invoke(app, ["preset", "wlasl100", "--root", str(tmp_path), "--params", str(params)])
    assert result.exit_code == 0, result.output
    assert load_params(params).pretrain.lr_steps == (50, 100) and load_params(params).dataset.num_classes == 100


# Keys whose params.yaml comment names the authors' code but that the `authors` preset leaves
# alone, and why: they are numbers of a training recipe, not forms (the dataset presets set them;
# on the demo the authors' lr step at epoch 100 would not even fit its 30 epochs).
NOT_FORMS = {
    "pretrain.lr_steps": "recipe: the authors' lr schedule",
    "finetune.schedules": "recipe: the authors' 80 fine-tuning epochs",
    "model.sizes.paper": "recipe: the paper size's widths (encoder-block forms will be their own switches)",
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
    assert loaded.dataset == load_params(REPO / "params.yaml").dataset.model_copy(update={"root": tmp_path / "data" / "demo"})
    runner.invoke(app, ["preset", "paper_forms", "--params", str(params)])
    assert params.read_text() == original
