import shutil

import numpy as np
import pytest
from PIL import Image, ImageSequence
from typer.testing import CliRunner

from slrpipe.errors import SlrpipeError
from slrpipe.pose.extract import run_extract
from slrpipe.h5io import RaggedFile
from slrpipe.data.preprocess import run_preprocess
from slrpipe.evaluation.show import DPI, render_sample, strip_size
from stages.common import standalone
from stages.show import show
from tests.conftest import make_params

SAMPLES = ("MP_Data/bad/0", "MP_Data/good/0")


@pytest.fixture(scope="module")
def dataset(shared, tmp_path_factory):
    """A preprocessed dataset of two real ksl13 sequences (640 x 480 frames)."""
    tmp = tmp_path_factory.mktemp("show")
    for sample_id in SAMPLES:
        shutil.copytree(shared / "ksl13" / sample_id, tmp / "ksl" / sample_id)
    params = make_params(tmp / "ksl")
    # One signer: no held-out splits, or the signer split has nothing to put in them.
    # The frame form, which the body-form test draws against.
    params = params.model_copy(update={"preprocess": params.preprocess.model_copy(
        update={"val_fraction": 0.0, "test_fraction": 0.0, "trunk_norm": "frame"})})
    run_extract(params, tmp / "extract", None)
    run_preprocess(params, tmp / "extract" / "keypoints.h5", tmp / "preprocess")
    return tmp / "preprocess" / "dataset.h5"


def test_png_strip_has_the_layout_size_and_is_drawn(dataset, tmp_path):
    out = render_sample(dataset, "MP_Data/bad/0", tmp_path / "strip.png", frames=4)
    width, height = strip_size(4, 480 / 640)
    with Image.open(out) as image:
        assert image.format == "PNG"
        assert image.size == (round(width * DPI), round(height * DPI))
        pixels = np.asarray(image.convert("L"), dtype=np.float64)
    # Not blank: skeletons and titles make the grey levels vary well beyond a white page's.
    assert pixels.std() > 10
    assert (pixels < 128).mean() > 0.005


def test_more_frames_than_the_sample_has_gives_one_column_per_frame(dataset, tmp_path):
    with RaggedFile(dataset) as source:
        length = len(source.frames("frame_index", source.column("sample_id").index("MP_Data/good/0")))
    out = render_sample(dataset, "MP_Data/good/0", tmp_path / "all.png", frames=1000)
    with Image.open(out) as image:
        assert image.size[0] == round(strip_size(length, 0.75)[0] * DPI)


def test_gif_has_one_frame_per_kept_frame(dataset, tmp_path):
    with RaggedFile(dataset) as source:
        length = len(source.frames("frame_index", source.column("sample_id").index("MP_Data/bad/0")))
    out = render_sample(dataset, "MP_Data/bad/0", tmp_path / "anim.gif")
    with Image.open(out) as image:
        assert image.format == "GIF"
        assert sum(1 for _ in ImageSequence.Iterator(image)) == length


def test_unknown_sample_names_it_and_suggests_close_ids(dataset, tmp_path):
    with pytest.raises(SlrpipeError, match=r"no sample 'MP_Data/bad/9' in .*dataset.h5; close matches: MP_Data/bad/0"):
        render_sample(dataset, "MP_Data/bad/9", tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_missing_dataset_says_to_run_preprocess(tmp_path):
    with pytest.raises(SlrpipeError, match=r"missing.h5 not found: run the preprocess stage first \(dvc repro preprocess\)"):
        render_sample(tmp_path / "missing.h5", "a", tmp_path / "x.png")


def test_other_picture_formats_are_refused(dataset, tmp_path):
    with pytest.raises(SlrpipeError, match=r"must be a .png .* or a .gif"):
        render_sample(dataset, "MP_Data/bad/0", tmp_path / "x.jpg")


def test_command_writes_to_reports_show_by_default(dataset, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    result = runner.invoke(standalone(show), ["MP_Data/bad/0", "--dataset", str(dataset), "--frames", "2"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "show: MP_Data/bad/0 -> reports/show/MP_Data_bad_0.png"
    assert (tmp_path / "reports" / "show" / "MP_Data_bad_0.png").is_file()

    result = runner.invoke(standalone(show), ["nope", "--dataset", str(dataset)])
    assert result.exit_code == 1
    assert "error: no sample 'nope'" in result.output


def test_a_body_form_trunk_is_drawn_where_the_frame_form_puts_it(shared, dataset, tmp_path):
    from slrpipe.evaluation.show import load_sample

    params = make_params(tmp_path / "unused")
    body_params = params.model_copy(update={"preprocess": params.preprocess.model_copy(
        update={"trunk_norm": "body", "val_fraction": 0.0, "test_fraction": 0.0})})
    run_preprocess(body_params, dataset.parent.parent / "extract" / "keypoints.h5", tmp_path / "body")
    frame_sample = load_sample(dataset, SAMPLES[0])
    body_sample = load_sample(tmp_path / "body" / "dataset.h5", SAMPLES[0])
    assert not np.allclose(frame_sample.coords[:, :7], body_sample.coords[:, :7], atol=1e-3)
    visible = frame_sample.mask[:, :7]
    drawn = [s.trunk_in_frame(s.coords[:, :7].astype(np.float64))[visible] for s in (frame_sample, body_sample)]
    np.testing.assert_allclose(drawn[0], drawn[1], atol=1e-5)
