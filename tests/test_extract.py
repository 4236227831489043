import json
import os
import shutil

import numpy as np
import pytest

from slrpipe.pose import posefiles
from slrpipe.errors import SlrpipeError
from slrpipe.pose.extract import Extractor, Shard, merge_shards, run_extract
from slrpipe.h5io import RaggedFile
from slrpipe.pose.manifest import read_manifest_csv
from slrpipe.pose.skipped import read_report
from slrpipe.pose.sources import build_manifest
from tests.conftest import make_params


def test_mp_data_extraction_matches_direct_import(ksl_small, tmp_path):
    params = make_params(ksl_small)
    out = tmp_path / "out"
    result = run_extract(params, out, tmp_path / "cache")
    assert result.extracted == 8 and not result.problems
    with RaggedFile(out / "keypoints.h5") as keypoints:
        ids = keypoints.column("sample_id")
        assert ids == sorted(ids) and len(ids) == 8
        assert keypoints.attr("glosses") == ["bad", "good"]
        assert keypoints.column("signer")[0] == "MP_Data"
        for index, sample_id in enumerate(ids):
            direct = posefiles.mediapipe_to_49(posefiles.load_mp_frames(ksl_small / sample_id), (640, 480))
            np.testing.assert_array_equal(keypoints.frames("keypoints", index), direct)
        assert keypoints.column("frame_size")[0].tolist() == [640, 480]
        assert keypoints.column("label").tolist() == [0, 0, 1, 1, 0, 0, 1, 1]
    assert (out / "glosses.txt").read_text() == "bad\ngood\n"
    assert (out / "extract_report.csv").read_text() == "sample_id,path,problem\n"
    summary = json.loads((out / "extract_summary.json").read_text())
    assert summary == {"samples": 8, "extracted": 8, "bad": 0, "bad_fraction": 0.0, "frames": 240, "classes": 2}
    assert (out / "manifest.csv").read_text().splitlines()[0] == "sample_id,path,kind,gloss,signer,split,label"


def _add_bad_samples(root):
    nan_dir = root / "MP_Data" / "bad" / "7"
    shutil.copytree(root / "MP_Data" / "bad" / "0", nan_dir)
    vector = np.load(nan_dir / "3.npy")
    vector[10] = np.nan
    np.save(nan_dir / "3.npy", vector)
    short_dir = root / "MP_Data" / "good" / "7"
    short_dir.mkdir()
    for frame in range(5):
        np.save(short_dir / f"{frame}.npy", np.zeros(100))
    empty_dir = root / "MP_Data" / "good" / "8"
    empty_dir.mkdir()
    for frame in range(5):
        np.save(empty_dir / f"{frame}.npy", np.zeros(258))


def test_bad_samples_are_reported_and_skipped(ksl_small, tmp_path):
    _add_bad_samples(ksl_small)
    params = make_params(ksl_small, max_bad_fraction=0.5)
    result = run_extract(params, tmp_path / "out", None)
    assert result.extracted == 8
    problems = {p.sample_id: p.problem for p in read_report(tmp_path / "out" / "extract_report.csv")}
    assert problems == {
        "MP_Data/bad/7": "pose values: NaN or infinite values in 1 frame(s) (3)",
        "MP_Data/good/7": "expected 258 or 1662 values per frame (MediaPipe pose+hands, with or without face), got shape (5, 100)",
        "MP_Data/good/8": "no person in any frame (all landmarks are zero)",
    }
    with RaggedFile(tmp_path / "out" / "keypoints.h5") as keypoints:
        assert not set(problems) & set(keypoints.column("sample_id"))


def test_too_many_bad_samples_fail_after_writing_the_report(ksl_small, tmp_path):
    _add_bad_samples(ksl_small)
    params = make_params(ksl_small, max_bad_fraction=0.1)
    with pytest.raises(SlrpipeError, match=r"3 of 11 samples are bad \(27% > extract.max_bad_fraction 10%\); see .*extract_report.csv"):
        run_extract(params, tmp_path / "out", None)
    assert len(read_report(tmp_path / "out" / "extract_report.csv")) == 3


def test_shards_then_merge_equal_one_run(ksl_small, tmp_path):
    _add_bad_samples(ksl_small)
    params = make_params(ksl_small, max_bad_fraction=0.5)
    run_extract(params, tmp_path / "whole", None)
    for index in range(3):
        run_extract(params, tmp_path / "sharded", None, Shard(index, 3))
    assert not (tmp_path / "sharded" / "keypoints.h5").exists()
    merged = merge_shards(params, tmp_path / "sharded", 3)
    assert merged.extracted == 8 and len(merged.problems) == 3
    with RaggedFile(tmp_path / "whole" / "keypoints.h5") as whole, RaggedFile(tmp_path / "sharded" / "keypoints.h5") as joined:
        assert whole.column("sample_id") == joined.column("sample_id")
        assert whole.offsets.tolist() == joined.offsets.tolist()
        np.testing.assert_array_equal(whole._handle["frames/keypoints"][:], joined._handle["frames/keypoints"][:])
    for name in ("manifest.csv", "glosses.txt"):
        assert (tmp_path / "whole" / name).read_text() == (tmp_path / "sharded" / name).read_text()
    assert read_report(tmp_path / "whole" / "extract_report.csv") == read_report(tmp_path / "sharded" / "extract_report.csv")


def test_merge_names_the_missing_shard(ksl_small, tmp_path):
    params = make_params(ksl_small)
    run_extract(params, tmp_path / "out", None, Shard(0, 2))
    with pytest.raises(SlrpipeError, match=r"shard 1/2 has no output .* run `slrpipe extract --shard 1/2`"):
        merge_shards(params, tmp_path / "out", 2)


def test_shard_parsing():
    assert Shard.parse("3/8") == Shard(3, 8)
    assert Shard(1, 3).select(list(range(7))) == [1, 4]
    for bad in ("8/8", "x", "1/0", "-1/4"):
        with pytest.raises(SlrpipeError, match="--shard"):
            Shard.parse(bad)


class CountingEstimator:
    """Stands in for a pose backend: 258-vectors with both hands found, and a record of calls."""

    def __init__(self, interrupt_at: int | None = None) -> None:
        self.calls = 0
        self.interrupt_at = interrupt_at

    def estimate_video(self, batches):
        self.calls += 1
        if self.calls == self.interrupt_at:
            raise KeyboardInterrupt
        frames = sum(len(batch) for batch in batches)
        vectors = np.full((frames, 258), 0.5, np.float32)
        vectors[:, 3] = 1.0
        return vectors


def _video_dataset(shared, root, names):
    root.mkdir(exist_ok=True)
    for name in names:
        (root / name.lower()).mkdir(exist_ok=True)
        target = root / name.lower() / "clip.mp4"
        if not target.exists():
            os.symlink(shared / "videos" / f"{name}.mp4", target)


def test_interrupted_run_resumes_and_new_videos_only_are_processed(shared, tmp_path, monkeypatch):
    root = tmp_path / "videos"
    _video_dataset(shared, root, ["FOOTBALL", "SOUP"])
    params = make_params(root, source="video_folder", backend="mediapipe")
    cache = tmp_path / "cache"
    estimator = CountingEstimator(interrupt_at=2)
    monkeypatch.setattr(Extractor, "_make_backend", lambda self: estimator)
    with pytest.raises(KeyboardInterrupt):
        run_extract(params, tmp_path / "out", cache)
    assert not (tmp_path / "out" / "keypoints.h5").exists()  # nothing half-written
    assert estimator.calls == 2

    estimator = CountingEstimator()
    monkeypatch.setattr(Extractor, "_make_backend", lambda self: estimator)
    result = run_extract(params, tmp_path / "out", cache)
    assert result.extracted == 2 and estimator.calls == 1  # FOOTBALL came from the cache

    _video_dataset(shared, root, ["FOOTBALL", "SOUP", "test_video"])
    estimator = CountingEstimator()
    monkeypatch.setattr(Extractor, "_make_backend", lambda self: estimator)
    result = run_extract(params, tmp_path / "out", cache)
    assert result.extracted == 3 and estimator.calls == 1
    with RaggedFile(tmp_path / "out" / "keypoints.h5") as keypoints:
        assert keypoints.column("sample_id") == ["football/clip", "soup/clip", "test_video/clip"]
        assert keypoints.column("frame_size").tolist() == [[640, 360], [320, 240], [540, 720]]
        assert [len(keypoints.frames("keypoints", i)) for i in range(3)] == [62, 41, 58]

    # A changed backend setting must not reuse results made with the old one.
    params = make_params(root, source="video_folder", backend="mediapipe", mediapipe_min_detection_confidence=0.7)
    estimator = CountingEstimator()
    monkeypatch.setattr(Extractor, "_make_backend", lambda self: estimator)
    run_extract(params, tmp_path / "out", cache)
    assert estimator.calls == 3


def test_unreadable_and_empty_videos_are_reported(shared, tmp_path, monkeypatch):
    root = tmp_path / "videos"
    _video_dataset(shared, root, ["SOUP"])
    (root / "broken").mkdir()
    (root / "broken" / "clip.mp4").write_bytes(b"\x00\x01 definitely not a video" * 100)
    (root / "empty").mkdir()
    (root / "empty" / "clip.avi").write_bytes(b"")
    estimator = CountingEstimator()
    monkeypatch.setattr(Extractor, "_make_backend", lambda self: estimator)
    params = make_params(root, source="video_folder", backend="mediapipe", max_bad_fraction=1.0)
    result = run_extract(params, tmp_path / "out", tmp_path / "cache")
    assert result.extracted == 1 and estimator.calls == 1
    problems = {p.sample_id: p.problem for p in result.problems}
    assert problems == {
        "broken/clip": "cannot open video (unreadable or unsupported container)",
        "empty/clip": "cannot open video (unreadable or unsupported container)",
    }


def test_mmpose_backend_without_checkpoint_stops_with_one_clear_line(shared, tmp_path):
    root = tmp_path / "videos"
    _video_dataset(shared, root, ["SOUP"])
    params = make_params(root, source="video_folder", backend="mmpose")
    with pytest.raises(SlrpipeError, match="extract.pose_checkpoint is not set"):
        run_extract(params, tmp_path / "out", None)


def test_mmpose_json_keeps_wholebody(shared, tmp_path):
    params = make_params(shared / "mmpose_wholebody", source="mmpose_json", keep_wholebody=True)
    result = run_extract(params, tmp_path / "out", None)
    assert result.extracted == 2
    with RaggedFile(tmp_path / "out" / "keypoints.h5") as keypoints:
        wholebody = keypoints.frames("wholebody", 1)
        np.testing.assert_array_equal(keypoints.frames("keypoints", 1), wholebody[:, posefiles.joints.WHOLEBODY_TO_49])
        assert keypoints.column("has_wholebody").tolist() == [True, True]
        assert keypoints.column("gloss") == ["FOOTBALL", "SOUP"]


def _sequences(folder, count, width=258):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for index in range(count):
        np.save(folder / f"{index}.npy", rng.random((6, width), dtype=np.float32))


def test_glosses_txt_line_i_is_label_i_whatever_the_gloss_holds(tmp_path):
    """A gloss with a line break is a reported bad row; surrounding spaces are dropped."""
    _sequences(tmp_path / "data", 6)
    rows = ["path,gloss,signer,split", "data/0.npy,hello,,", 'data/1.npy,"two\nlines",,', "data/2.npy,zebra,,",
            'data/3.npy,"carriage\rreturn",,', 'data/4.npy,"  hello ",,', "data/5.npy,tab\there,,"]
    (tmp_path / "list.csv").write_text("\n".join(rows) + "\n", newline="")
    params = make_params(tmp_path / "list.csv", source="manifest", max_bad_fraction=0.5)
    result = run_extract(params, tmp_path / "out", None)
    glosses_txt = (tmp_path / "out" / "glosses.txt").read_text(encoding="utf-8")
    assert glosses_txt.splitlines() == result.manifest.glosses == ["hello", "zebra"]
    with RaggedFile(tmp_path / "out" / "keypoints.h5") as keypoints:
        for gloss, label in zip(keypoints.column("gloss"), keypoints.column("label")):
            assert glosses_txt.splitlines()[label] == gloss
    problems = {p.sample_id: p.problem for p in read_report(tmp_path / "out" / "extract_report.csv")}
    assert problems == {
        "data/1": "list.csv line 3: gloss 'two\\nlines' holds a line break or control character: glosses.txt has one gloss per line",
        "data/3": "list.csv line 6: gloss 'carriage\\rreturn' holds a line break or control character: glosses.txt has one gloss per line",
        "data/5": "list.csv line 9: gloss 'tab\\there' holds a line break or control character: glosses.txt has one gloss per line",  # a lone \r ends a line too
    }


def test_folder_names_become_glosses_only_when_they_fit_one_line(tmp_path):
    for name in ("hello", " hello ", "line\u2028break", "next\x85line"):
        _sequences(tmp_path / "data" / name, 1)
    manifest = build_manifest(make_params(tmp_path / "data").dataset())
    assert manifest.glosses == ["hello"] and [row.gloss for row in manifest.rows] == ["hello", "hello"]
    assert sorted(p.problem for p in manifest.problems) == [
        "gloss 'line\\u2028break' holds a line break or control character: glosses.txt has one gloss per line",
        "gloss 'next\\x85line' holds a line break or control character: glosses.txt has one gloss per line",
    ]


def test_a_gloss_whose_samples_are_all_bad_is_dropped_and_labels_renumbered(tmp_path):
    for gloss in ("alpha", "broken", "zebra"):
        _sequences(tmp_path / "data" / gloss, 2, width=7 if gloss == "broken" else 258)  # 7 values: not MediaPipe
    params = make_params(tmp_path / "data", max_bad_fraction=0.5)
    whole = run_extract(params, tmp_path / "whole", None)
    for index in range(2):
        run_extract(params, tmp_path / "sharded", None, Shard(index, 2))
    merge_shards(params, tmp_path / "sharded", 2)
    for out in (tmp_path / "whole", tmp_path / "sharded"):
        assert (out / "glosses.txt").read_text() == "alpha\nzebra\n"
        with RaggedFile(out / "keypoints.h5") as keypoints:
            assert keypoints.attr("glosses") == ["alpha", "zebra"]
            assert keypoints.column("gloss") == ["alpha", "alpha", "zebra", "zebra"]
            assert keypoints.column("label").tolist() == [0, 0, 1, 1]
        labels = {row.sample_id: row.label for row in read_manifest_csv(out / "manifest.csv")}
        assert labels == {"alpha/0": 0, "alpha/1": 0, "broken/0": -1, "broken/1": -1, "zebra/0": 1, "zebra/1": 1}
        report = read_report(out / "extract_report.csv")
        assert [p.sample_id for p in report] == ["broken/0", "broken/1", ""]
        assert report[-1].problem == "gloss 'broken' dropped: none of its 2 sample(s) is usable; labels renumbered"
    assert whole.manifest.glosses == ["alpha", "zebra"] and len(whole.problems) == 2  # the bad fraction counts samples
