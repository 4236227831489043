"""Damaged HDF5 files end with one line that names the file and how to get it back."""

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from slrpipe.errors import SlrpipeError
from slrpipe.h5io import RaggedFile, RaggedWriter
from stages.cli import app
from tests.conftest import layout


def _write(path, samples=3, frames=400):
    rng = np.random.default_rng(0)
    with RaggedWriter(path, {"keypoints": ((49, 3), np.float32)}) as writer:
        for index in range(samples):
            writer.append({"keypoints": rng.random((frames, 49, 3), dtype=np.float32)}, sample_id=f"s{index}", label=index)


def test_truncated_file_is_one_line_naming_the_file_and_the_fix(tmp_path):
    path = tmp_path / "keypoints.h5"
    _write(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(SlrpipeError) as caught:
        RaggedFile(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: damaged or truncated HDF5 file (truncated file: eof = ")
    assert message.endswith(f"restore it with `dvc checkout --force {path}`, or rerun the stage that writes it (`dvc repro`)")
    assert "\n" not in message

    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(layout({"dataset": {"source": "mp_data", "root": str(tmp_path)}})))
    result = CliRunner().invoke(app, ["preprocess", "--params", str(params), "--keypoints", str(path), "--out-dir", str(tmp_path / "pre")])
    assert result.exit_code == 1 and result.output.strip() == f"error: {message}"


def test_not_hdf5_and_foreign_hdf5_files(tmp_path):
    text = tmp_path / "dataset.h5"
    text.write_text("not HDF5\n")
    with pytest.raises(SlrpipeError, match=r"dataset.h5: damaged or truncated HDF5 file \(file signature not found\): restore it"):
        RaggedFile(text)
    import h5py

    with h5py.File(tmp_path / "other.h5", "w") as handle:
        handle["x"] = [1]
    with pytest.raises(SlrpipeError, match=r"other.h5: not a file of slrpipe samples \(no samples/offsets\): restore it"):
        RaggedFile(tmp_path / "other.h5")
    with pytest.raises(SlrpipeError, match=r"absent.h5 not found"):
        RaggedFile(tmp_path / "absent.h5")


def test_damaged_sample_data_is_one_line(tmp_path):
    path = tmp_path / "dataset.h5"
    _write(path)
    with RaggedFile(path) as intact:
        chunk = intact._frames["keypoints"].id.get_chunk_info(1)  # the second compressed chunk
    data = bytearray(path.read_bytes())
    data[chunk.byte_offset : chunk.byte_offset + chunk.size] = bytes(chunk.size)  # zeroed on disk
    path.write_bytes(bytes(data))
    with RaggedFile(path) as damaged:
        np.testing.assert_array_equal(damaged.frames("keypoints", 2).shape, (400, 49, 3))  # chunks 4-5: intact
        with pytest.raises(SlrpipeError, match=r"dataset.h5: sample 0 is unreadable \(.*\): restore it with `dvc checkout"):
            damaged.frames("keypoints", 0)
