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
    assert result.exit_code == 1 and result.output.startswith("error: unknown preset 'wlasl9000': choose one of demo,")
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
