"""slrpipe.engine.checkpoints: weights_only loading that accepts OpenMMLab's numpy metadata and nothing else."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from slrpipe.engine import checkpoints
from slrpipe.engine.checkpoints import load_checkpoint
from slrpipe.errors import SlrpipeError


class Custom:
    """Stands for any class a malicious or foreign checkpoint could pickle."""


def _openmmlab_like(path: Path) -> dict:
    checkpoint = {
        "state_dict": {"backbone.weight": torch.arange(6.0).reshape(2, 3)},
        "meta": {
            "dataset_meta": {
                "sigmas": np.linspace(0.02, 0.1, 5, dtype=np.float32),
                "flip_indices": np.array([0, 2, 1], dtype=np.int64),
                "keypoint_colors": np.zeros((5, 3), dtype=np.uint8),
                "visible": np.array([True, False]),
            },
            "epoch": np.int64(270),
            "best_score": np.float64(0.61),
            "dtype": np.dtype("float16"),
        },
    }
    torch.save(checkpoint, path)
    return checkpoint


def test_numpy_metadata_loads(tmp_path: Path) -> None:
    path = tmp_path / "model.pth"
    saved = _openmmlab_like(path)
    loaded = load_checkpoint(path)
    assert torch.equal(loaded["state_dict"]["backbone.weight"], saved["state_dict"]["backbone.weight"])
    for key, value in saved["meta"]["dataset_meta"].items():
        np.testing.assert_array_equal(loaded["meta"]["dataset_meta"][key], value)
        assert loaded["meta"]["dataset_meta"][key].dtype == value.dtype
    assert loaded["meta"]["epoch"] == 270 and isinstance(loaded["meta"]["epoch"], np.int64)
    assert loaded["meta"]["best_score"] == pytest.approx(0.61)
    assert loaded["meta"]["dtype"] == np.dtype("float16")


def test_numpy_1x_names_load(tmp_path: Path) -> None:
    """A checkpoint written under numpy 1.x names numpy.core.multiarray instead of numpy._core."""
    new_style = tmp_path / "new.pth"
    _openmmlab_like(new_style)
    old_style = tmp_path / "old.pth"
    with zipfile.ZipFile(new_style) as src, zipfile.ZipFile(old_style, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename.endswith("data.pkl"):
                data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
            dst.writestr(info.filename, data)
    assert "numpy.core.multiarray._reconstruct" in torch.serialization.get_unsafe_globals_in_checkpoint(old_style)
    loaded = load_checkpoint(old_style)
    assert loaded["meta"]["dataset_meta"]["sigmas"].dtype == np.float32
    assert loaded["meta"]["epoch"] == 270


def test_legacy_format_loads(tmp_path: Path) -> None:
    path = tmp_path / "legacy.pth"
    torch.save({"meta": {"x": np.arange(3)}}, path, _use_new_zipfile_serialization=False)
    np.testing.assert_array_equal(load_checkpoint(path)["meta"]["x"], np.arange(3))


@pytest.mark.parametrize(
    ("payload", "named"),
    [
        (Custom(), "Custom"),
        (np.array(["a", None], dtype=object), "ObjectDType"),  # object arrays can hold anything
    ],
)
def test_other_globals_refused(tmp_path: Path, payload: object, named: str) -> None:
    path = tmp_path / "foreign.pth"
    torch.save({"state_dict": {}, "meta": {"x": payload}}, path)
    with pytest.raises(SlrpipeError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert str(path) in message and named in message and "weights_only" in message
    assert "\n" not in message


def test_never_weights_only_false(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict] = []
    real_load = torch.load

    def spy(*args: object, **kwargs: object) -> object:
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(checkpoints.torch, "load", spy)
    path = tmp_path / "model.pth"
    _openmmlab_like(path)
    load_checkpoint(path)
    with pytest.raises(SlrpipeError):
        torch.save({"x": Custom()}, path)
        load_checkpoint(path)
    assert calls and all(c.get("weights_only") is True and c.get("map_location") == "cpu" for c in calls)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.pth"
    with pytest.raises(SlrpipeError, match="checkpoint not found: .*absent.pth"):
        load_checkpoint(path)


def test_damaged_file(tmp_path: Path) -> None:
    good = tmp_path / "good.pth"
    _openmmlab_like(good)
    bad = tmp_path / "bad.pth"
    bad.write_bytes(good.read_bytes()[:200])
    with pytest.raises(SlrpipeError, match="bad.pth: not a readable PyTorch checkpoint") as info:
        load_checkpoint(bad)
    assert "\n" not in str(info.value)


def test_not_a_dict(tmp_path: Path) -> None:
    path = tmp_path / "tensor.pth"
    torch.save(torch.zeros(2), path)
    with pytest.raises(SlrpipeError, match="expected a dict checkpoint, found Tensor"):
        load_checkpoint(path)


def test_garbage_is_unreadable_not_refused(tmp_path: Path) -> None:
    """Text, CSV or JSON fails inside the unpickler in many ways (KeyError, IndexError, bad operand)."""
    path = tmp_path / "notes.pth"
    for content in (b"hello, this is text\n", b"a,b\n1,2\n", b'{"a": 1}', bytes(64), b""):
        path.write_bytes(content)
        with pytest.raises(SlrpipeError) as info:
            load_checkpoint(path)
        assert str(info.value) == f"{path}: not a readable PyTorch checkpoint (damaged, truncated or another kind of file)"


def test_a_pipeline_output_says_how_to_restore_it(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    torch.save({"model": {"w": torch.zeros(1000)}}, path)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(SlrpipeError) as info:
        load_checkpoint(path, output=True)
    assert str(info.value) == (f"{path}: not a readable PyTorch checkpoint (damaged, truncated or another kind of file): "
                               f"restore it with `dvc checkout --force {path}`, or rerun the stage that writes it (`dvc repro`)")


def test_resume_from_a_damaged_checkpoint_starts_over(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from slrpipe.engine.checkpoints import Checkpointer
    from slrpipe.engine.loop import sgd_with_steps

    model = torch.nn.Linear(3, 2)
    optimizer, scheduler = sgd_with_steps(model.parameters(), 0.1, 0.9, 0.0, [1], 0.1)
    checkpointer = Checkpointer(tmp_path / "checkpoint.pt", "fingerprint")
    checkpointer.save(2, model, optimizer, scheduler)
    checkpointer.path.write_bytes(checkpointer.path.read_bytes()[:100])  # killed while copying, disk full...
    before = {name: value.clone() for name, value in model.state_dict().items()}
    assert checkpointer.resume(model, optimizer, scheduler) == (0, {})
    assert all(torch.equal(before[name], value) for name, value in model.state_dict().items())
    assert f"{checkpointer.path}: not a readable PyTorch checkpoint" in caplog.text and "starting from scratch" in caplog.text


def test_recalibrate_batchnorm_averages_the_statistics_of_every_batch():
    from slrpipe.engine.loop import recalibrate_batchnorm

    model = torch.nn.Sequential(torch.nn.Linear(1, 1, bias=False), torch.nn.BatchNorm1d(1))
    torch.nn.init.ones_(model[0].weight)
    model.eval()
    batches = [torch.tensor([[1.0], [3.0]]), torch.tensor([[5.0], [7.0]])]
    recalibrate_batchnorm(model, batches, model)
    # Batch means 2 and 6 -> 4; unbiased batch variances 2 and 2 -> 2 (a cumulative average).
    torch.testing.assert_close(model[1].running_mean, torch.tensor([4.0]))
    torch.testing.assert_close(model[1].running_var, torch.tensor([2.0]))
    assert model[1].momentum == 0.1 and not model.training  # settings and mode restored
