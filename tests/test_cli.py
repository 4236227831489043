import subprocess
import sys

import yaml
from typer.testing import CliRunner

from stages.cli import app
from tests.conftest import REPO, layout

runner = CliRunner()


def test_every_stage_is_a_subcommand():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("extract", "extract-merge"):
        assert command in result.output


def test_bad_params_end_with_one_clear_line(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(layout({"dataset": {"source": "mp_data", "root": "x"}, "extract": {"backend": "openpose"}})))
    result = runner.invoke(app, ["extract", "--params", str(params)])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [f"error: {params}: extract.backend: Input should be 'mmpose' or 'mediapipe'"]


def test_wrong_dataset_path_ends_with_one_clear_line(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(layout({"dataset": {"source": "mp_data", "root": "nowhere"}})))
    result = runner.invoke(app, ["extract", "--params", str(params), "--out-dir", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert result.output.strip() == f"error: datasets.ksl.root {tmp_path / 'nowhere'} is not a folder"


def test_stage_module_runs_standalone(ksl_small, tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(layout({"dataset": {"source": "mp_data", "root": str(ksl_small)}})))
    completed = subprocess.run(
        [sys.executable, "-m", "stages.extract", "--params", str(params), "--out-dir", str(tmp_path / "out")],
        cwd=REPO, capture_output=True, text=True, check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert "extract: 8 samples, 240 frames, 0 bad" in completed.stdout
    assert (tmp_path / "out" / "keypoints.h5").is_file()
