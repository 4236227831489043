import csv
import os

import numpy as np
import pytest

from slrpipe.config import DatasetParams, parse_params
from slrpipe.errors import SlrpipeError
from slrpipe.pose.manifest import KIND_MMPOSE_JSON, KIND_MP_FRAMES, KIND_MP_SEQUENCE, KIND_VIDEO, read_manifest_csv, write_manifest_csv
from slrpipe.pose.sources import build_manifest
from tests.conftest import layout


def _manifest(source, root, **dataset):
    return build_manifest(DatasetParams(source=source, root=root, **dataset), "mine")


def test_ksl13_sessions_become_signers(shared):
    manifest = _manifest("mp_data", shared / "ksl13")
    assert len(manifest) == 5 * 13 * 10
    assert not manifest.problems
    assert manifest.glosses == sorted(manifest.glosses) and len(manifest.glosses) == 13
    assert {row.signer for row in manifest.rows} == {"MP_Data", "MP_Data1", "MP_Data2", "MP_Data3", "MP_Data4"}
    row = next(r for r in manifest.rows if r.sample_id == "MP_Data3/i'm fine/7")
    assert row.gloss == "i'm fine" and row.kind == KIND_MP_FRAMES and row.signer == "MP_Data3"
    assert row.label == manifest.glosses.index("i'm fine")
    assert all(r.split == "" for r in manifest.rows)


def test_fydpasl_layout_skips_hidden_files(shared):
    manifest = _manifest("mp_data", shared / "mp_data_fydpasl")
    assert manifest.glosses == ["-", "hello", "no", "thank-you"]
    assert len(manifest) == 4 * 30
    assert all(row.signer == "" for row in manifest.rows)


def test_sequence_array_variant(tmp_path):
    for gloss, width in (("hello", 258), ("thanks", 1662)):
        (tmp_path / gloss).mkdir()
        for sequence in range(3):
            np.save(tmp_path / gloss / f"{sequence}.npy", np.zeros((20, width), np.float32))
    manifest = _manifest("mp_data", tmp_path)
    assert [row.sample_id for row in manifest.rows] == [f"{g}/{s}" for g in ("hello", "thanks") for s in range(3)]
    assert {row.kind for row in manifest.rows} == {KIND_MP_SEQUENCE}
    assert [row.label for row in manifest.rows] == [0, 0, 0, 1, 1, 1]


def test_unreadable_npy_is_a_problem_not_a_crash(tmp_path):
    (tmp_path / "w" / "0").mkdir(parents=True)
    (tmp_path / "w" / "0" / "0.npy").write_bytes(b"not numpy")
    (tmp_path / "w" / "1").mkdir()
    np.save(tmp_path / "w" / "1" / "0.npy", np.zeros(258))
    manifest = _manifest("mp_data", tmp_path)
    assert [row.sample_id for row in manifest.rows] == ["w/1"]
    assert manifest.problems[0].sample_id == "w/0" and "unreadable .npy" in manifest.problems[0].problem


def test_video_folder_nested_and_flat(shared, tmp_path):
    videos = shared / "videos"
    (tmp_path / "signer1" / "soup").mkdir(parents=True)
    (tmp_path / "football").mkdir()
    os.symlink(videos / "SOUP.mp4", tmp_path / "signer1" / "soup" / "a.mp4")
    os.symlink(videos / "FOOTBALL.mp4", tmp_path / "football" / "b.MOV")
    os.symlink(videos / "test_video.mp4", tmp_path / "hello.webm")
    (tmp_path / "notes.txt").write_text("not a video")
    manifest = _manifest("video_folder", tmp_path)
    assert [(r.sample_id, r.gloss, r.signer, r.kind) for r in manifest.rows] == [
        ("football/b", "football", "", KIND_VIDEO),
        ("hello", "hello", "", KIND_VIDEO),
        ("signer1/soup/a", "soup", "signer1", KIND_VIDEO),
    ]


def test_mmpose_json_folder(shared):
    manifest = _manifest("mmpose_json", shared / "mmpose_wholebody")
    assert [(r.gloss, r.kind) for r in manifest.rows] == [("FOOTBALL", KIND_MMPOSE_JSON), ("SOUP", KIND_MMPOSE_JSON)]


def test_missing_root_and_empty_root(tmp_path):
    # The params key of the dataset's root is named, so a project of several datasets says which.
    with pytest.raises(SlrpipeError, match=r"^datasets\.mine\.root .* is not a folder"):
        _manifest("video_folder", tmp_path / "absent")
    with pytest.raises(SlrpipeError, match=r"^datasets\.mine\.root .*no video files found"):
        _manifest("video_folder", tmp_path)


def test_manifest_csv_mixed_kinds_and_problems(shared, tmp_path):
    ksl = shared / "ksl13" / "MP_Data" / "bad" / "0"
    np.save(tmp_path / "seq.npy", np.zeros((10, 258)))
    rows = [
        {"path": str(shared / "videos" / "SOUP.mp4"), "gloss": "soup", "signer": "s1", "split": "train"},
        {"path": str(shared / "mmpose_wholebody" / "FOOTBALL.json"), "gloss": "football", "signer": "", "split": "test"},
        {"path": str(ksl), "gloss": "bad", "signer": "", "split": "VAL"},
        {"path": "seq.npy", "gloss": "hello", "signer": "", "split": ""},
        {"path": "missing.mp4", "gloss": "x", "signer": "", "split": ""},
        {"path": "seq.npy", "gloss": "", "signer": "", "split": ""},
        {"path": "seq.npy", "gloss": "y", "signer": "", "split": "holdout"},
    ]
    csv_path = tmp_path / "list.csv"
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "gloss", "signer", "split"])
        writer.writeheader()
        writer.writerows(rows)
    manifest = _manifest("manifest", csv_path)
    assert sorted((r.gloss, r.kind, r.split) for r in manifest.rows) == [
        ("bad", KIND_MP_FRAMES, "val"),
        ("football", KIND_MMPOSE_JSON, "test"),
        ("hello", KIND_MP_SEQUENCE, ""),
        ("soup", KIND_VIDEO, "train"),
    ]
    assert next(r for r in manifest.rows if r.gloss == "hello").sample_id == "seq"
    problems = [p.problem for p in manifest.problems]
    assert problems == [
        "list.csv line 6: file not found",
        "list.csv line 7: no gloss",
        "list.csv line 8: split 'holdout' is not one of train, val, test",
    ]


def test_manifest_csv_without_required_columns(tmp_path):
    path = tmp_path / "list.csv"
    path.write_text("file,label\na.mp4,x\n")
    with pytest.raises(SlrpipeError, match="missing column\\(s\\) gloss, path"):
        _manifest("manifest", path)


def test_manifest_round_trip_and_duplicate_ids(tmp_path, shared):
    manifest = _manifest("mmpose_json", shared / "mmpose_wholebody")
    write_manifest_csv(manifest, tmp_path / "m.csv")
    assert read_manifest_csv(tmp_path / "m.csv") == manifest.rows
    from slrpipe.pose.manifest import finalize

    again = finalize(manifest.rows + manifest.rows[:1], [])
    assert len(again) == 2 and "duplicate sample id" in again.problems[0].problem


def test_manifest_csv_paths_naming_no_file_are_bad_rows(tmp_path):
    """An empty path, `.`, `/` or `..` names the CSV's own folder (or above it), never one sample."""
    np.save(tmp_path / "seq.npy", np.zeros((10, 258)))
    lines = ["path,gloss,signer,split", "seq.npy,hello,,"] + [f"{path},g{i},," for i, path in enumerate(("", ".", "/", "..", "./", "sub/.."))]
    (tmp_path / "list.csv").write_text("\n".join(lines) + "\n")
    manifest = _manifest("manifest", tmp_path / "list.csv")
    assert [row.sample_id for row in manifest.rows] == ["seq"] and manifest.glosses == ["hello"]
    assert [p.problem for p in manifest.problems] == [
        "list.csv line 3: empty path",
        *(f"list.csv line {line}: path {path!r} names a folder above the samples, not a sample"
          for line, path in zip(range(4, 9), (".", "/", "..", "./", "sub/.."))),
    ]
    assert len({p.sample_id for p in manifest.problems}) == 6  # each reported under its own name
    # ... and, like every bad sample, in the extract stage's report and its bad fraction.
    from slrpipe.pose.extract import run_extract
    from slrpipe.pose.skipped import read_report

    np.save(tmp_path / "seq.npy", np.random.default_rng(0).random((10, 258)))
    params = parse_params(layout({"dataset": {"source": "manifest", "root": str(tmp_path / "list.csv")}, "extract": {"max_bad_fraction": 0.9}}))
    result = run_extract(params, tmp_path / "out", None)
    assert result.extracted == 1 and read_report(tmp_path / "out" / "extract_report.csv") == manifest.problems
    with pytest.raises(SlrpipeError, match=r"6 of 7 samples are bad \(86% > extract.max_bad_fraction 50%\)"):
        run_extract(params.model_copy(update={"extract": params.extract.model_copy(update={"max_bad_fraction": 0.5})}), tmp_path / "out", None)


def test_unusable_manifest_csv_is_one_line(tmp_path):
    path = tmp_path / "list.csv"
    path.write_bytes(b"path,gloss\n\xff\xfe,x\n")
    with pytest.raises(SlrpipeError, match=r"list.csv: not a UTF-8 text CSV file"):
        _manifest("manifest", path)
    path.write_bytes(b"path,gloss\na.npy," + b"x" * 200_000 + b"\n")  # longer than the csv module takes
    with pytest.raises(SlrpipeError, match=r"list.csv: not a readable CSV file \(line 2: "):
        _manifest("manifest", path)
