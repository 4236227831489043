"""Official-format annotation files of WLASL, MS-ASL, NMFs-CSL and SLR500 become manifest rows.

Each test writes a tiny annotation file in the dataset's published format and links the
shared sample videos into the layout the adapter expects; no video is decoded.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from slrpipe.errors import SlrpipeError
from slrpipe.pose.manifest import KIND_VIDEO, ManifestRow, Problem
from slrpipe.pose.sources.official import (
    read_msasl,
    read_nmfs_csl,
    read_slr500,
    read_wlasl,
)
from slrpipe.data.subsets import nmfs_csl_subset

SHARED_VIDEOS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "videos"


@pytest.fixture
def place():
    """place("SOUP.mp4", dest): put a shared sample video at dest (a symlink, else a copy)."""
    if not SHARED_VIDEOS.is_dir():
        pytest.skip(f"sample videos not found at {SHARED_VIDEOS}")

    def _place(name: str, dest: Path) -> Path:
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            dest.symlink_to(SHARED_VIDEOS / name)
        except OSError:
            shutil.copy(SHARED_VIDEOS / name, dest)
        return dest

    return _place


def by_id(rows: list[ManifestRow]) -> dict[str, ManifestRow]:
    return {row.sample_id: row for row in rows}


def problem_of(problems: list[Problem], sample_id: str) -> str:
    matches = [p.problem for p in problems if p.sample_id == sample_id]
    assert len(matches) == 1, problems
    return matches[0]


# --- WLASL ----------------------------------------------------------------------------------


def wlasl_instance(video_id: str, split: str, signer: int) -> dict:
    # Every key of a real WLASL_v0.3.json instance, so the reader meets the true shape.
    return {
        "bbox": [385, 37, 885, 720], "fps": 25, "frame_end": -1, "frame_start": 1, "instance_id": 0,
        "signer_id": signer, "source": "aslbrick", "split": split, "url": "http://example.org/x.mp4",
        "variation_id": 0, "video_id": video_id,
    }


@pytest.fixture
def wlasl_root(tmp_path: Path, place) -> Path:
    entries = [
        {"gloss": "book", "instances": [wlasl_instance("00001", "train", 118), wlasl_instance("00002", "val", 5)]},
        {"gloss": "drink", "instances": [wlasl_instance("00003", "test", 7)]},
        {"gloss": "computer", "instances": [wlasl_instance("00004", "train", 9)]},  # clip never downloaded
    ]
    (tmp_path / "WLASL_v0.3.json").write_text(json.dumps(entries), encoding="utf-8")
    place("FOOTBALL.mp4", tmp_path / "videos" / "00001.mp4")
    place("SOUP.mp4", tmp_path / "videos" / "00002.mp4")
    place("test_video.mp4", tmp_path / "videos" / "00003.mp4")
    return tmp_path


def test_wlasl_rows_carry_gloss_split_signer_and_absolute_path(wlasl_root: Path, monkeypatch) -> None:
    monkeypatch.chdir(wlasl_root.parent)
    rows, problems = read_wlasl(Path(wlasl_root.name))  # a relative root still gives absolute paths
    found = by_id(rows)
    assert sorted(found) == ["00001", "00002", "00003"]
    assert found["00001"] == ManifestRow(
        "00001", str(wlasl_root / "videos" / "00001.mp4"), KIND_VIDEO, "book", "118", "train", -1
    )
    assert (found["00002"].split, found["00002"].signer) == ("val", "5")
    assert (found["00003"].gloss, found["00003"].split) == ("drink", "test")
    assert all(Path(row.path).is_absolute() for row in rows)
    assert problems == [Problem("00004", str(wlasl_root / "videos" / "00004.mp4"), "clip not found")]


def test_wlasl_subset_is_the_first_glosses_of_the_file(wlasl_root: Path) -> None:
    rows, problems = read_wlasl(wlasl_root, num_classes=1)
    assert {row.gloss for row in rows} == {"book"}
    assert problems == []  # "computer" is outside WLASL1, not a missing clip
    rows, problems = read_wlasl(wlasl_root, num_classes=2)
    assert {row.gloss for row in rows} == {"book", "drink"}


def test_wlasl_empty_gloss_and_unknown_split_are_problems(tmp_path: Path, place) -> None:
    entries = [
        {"gloss": "", "instances": [wlasl_instance("00001", "train", 1)]},
        {"gloss": "book", "instances": [wlasl_instance("00002", "dev", 1)]},
    ]
    (tmp_path / "WLASL_v0.3.json").write_text(json.dumps(entries), encoding="utf-8")
    place("FOOTBALL.mp4", tmp_path / "videos" / "00001.mp4")
    place("SOUP.mp4", tmp_path / "videos" / "00002.mp4")
    rows, problems = read_wlasl(tmp_path)
    assert rows == []
    assert problem_of(problems, "00001") == "no gloss (entry 0)"
    assert "split 'dev'" in problem_of(problems, "00002")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('[{"gloss": "book",\n  "instances": [}]', "WLASL_v0.3.json: invalid JSON at line 2"),
        ('{"gloss": "book"}', "expected a JSON list of gloss entries, found a dict"),
        ('[{"gloss": "a", "instances": []}, {"instances": []}]', 'missing key "gloss" in entry 1'),
        ('[{"gloss": "a", "instances": [{"split": "train"}]}]', 'missing key "video_id" in entry 0, instance 0'),
        ('[{"gloss": "a", "instances": {}}]', '"instances" of entry 0 is a dict, not a list'),
    ],
)
def test_wlasl_malformed_file_raises_one_line_naming_it(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "WLASL_v0.3.json").write_text(content, encoding="utf-8")
    with pytest.raises(SlrpipeError) as caught:
        read_wlasl(tmp_path)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_wlasl_missing_annotation_file_raises(tmp_path: Path) -> None:
    with pytest.raises(SlrpipeError, match=r"WLASL_v0\.3\.json: file not found"):
        read_wlasl(tmp_path)


# --- MS-ASL ---------------------------------------------------------------------------------


def msasl_entry(label: int | None, text: str, signer: int, url: str = "https://www.youtube.com/watch?v=wX78EPtSuzU",
                start: float = 0.0, clean_text: str | None = None) -> dict:
    # The keys of a real MSASL_*.json clip.
    return {
        "org_text": text.upper(), "clean_text": clean_text or text, "start_time": start, "signer_id": signer,
        "signer": -1, "start": 0, "end": 59, "file": "SignSchool", "label": label, "height": 360.0, "fps": 29.97,
        "end_time": start + 1.969, "url": url, "text": text, "box": [0.04, 0.29, 1.0, 0.82], "width": 640.0,
    }


def write_msasl(root: Path, train: list, val: list, test: list, classes: list[str] | None) -> None:
    for name, entries in (("MSASL_train.json", train), ("MSASL_val.json", val), ("MSASL_test.json", test)):
        (root / name).write_text(json.dumps(entries), encoding="utf-8")
    if classes is not None:
        (root / "MSASL_classes.json").write_text(json.dumps(classes), encoding="utf-8")


@pytest.fixture
def msasl_root(tmp_path: Path, place) -> Path:
    write_msasl(
        tmp_path,
        train=[msasl_entry(0, "hello", 20), msasl_entry(2, "teacher", 11)],
        # clean_text is not the class: the real files carry "police officer" under class "police".
        val=[msasl_entry(1, "nice", 92, clean_text="nice one")],
        test=[msasl_entry(0, "hello", 67), msasl_entry(1, "nice", 9)],  # second clip not downloaded
        classes=["hello", "nice", "teacher"],
    )
    place("FOOTBALL.mp4", tmp_path / "clips" / "train" / "00000.mp4")
    place("SOUP.mp4", tmp_path / "clips" / "train" / "00001.mp4")
    place("test_video.mp4", tmp_path / "clips" / "val" / "00000.mp4")
    place("SOUP.mp4", tmp_path / "clips" / "test" / "00000.mp4")
    return tmp_path


def test_msasl_rows_use_class_names_and_default_clip_template(msasl_root: Path) -> None:
    rows, problems = read_msasl(msasl_root)
    found = by_id(rows)
    assert sorted(found) == ["test_00000", "train_00000", "train_00001", "val_00000"]
    assert found["train_00000"] == ManifestRow(
        "train_00000", str(msasl_root / "clips" / "train" / "00000.mp4"), KIND_VIDEO, "hello", "20", "train", -1
    )
    assert (found["val_00000"].gloss, found["val_00000"].split, found["val_00000"].signer) == ("nice", "val", "92")
    assert found["test_00000"].split == "test"
    assert problems == [Problem("test_00001", str(msasl_root / "clips" / "test" / "00001.mp4"), "clip not found")]


def test_msasl_subset_keeps_labels_below_num_classes(msasl_root: Path) -> None:
    rows, problems = read_msasl(msasl_root, num_classes=2)
    assert {row.gloss for row in rows} == {"hello", "nice"}
    assert "train_00001" not in by_id(rows)  # label 2 is outside MS-ASL2
    assert [p.sample_id for p in problems] == ["test_00001"]


def test_msasl_custom_clip_template(tmp_path: Path, place) -> None:
    write_msasl(
        tmp_path,
        train=[msasl_entry(0, "hello", 1, url="www.youtube.com/watch?v=ieLzL1Sl6SU", start=35.769)],
        val=[], test=[], classes=["hello"],
    )
    place("SOUP.mp4", tmp_path / "downloads" / "hello" / "ieLzL1Sl6SU_35.769.mp4")
    rows, problems = read_msasl(tmp_path, clip_template="downloads/{gloss}/{youtube_id}_{start_time:.3f}.mp4")
    assert problems == []
    assert rows[0].path == str(tmp_path / "downloads" / "hello" / "ieLzL1Sl6SU_35.769.mp4")


def test_msasl_missing_label_and_unknown_class_are_problems(tmp_path: Path, place) -> None:
    write_msasl(tmp_path, train=[msasl_entry(None, "hello", 1), msasl_entry(5, "what", 1)], val=[], test=[],
                classes=["hello"])
    place("SOUP.mp4", tmp_path / "clips" / "train" / "00000.mp4")
    place("SOUP.mp4", tmp_path / "clips" / "train" / "00001.mp4")
    rows, problems = read_msasl(tmp_path)
    assert rows == []
    assert problem_of(problems, "train_00000") == "no label (MSASL_train.json entry 0)"
    assert "label 5 outside MSASL_classes.json" in problem_of(problems, "train_00001")


def test_msasl_without_classes_file_uses_text(tmp_path: Path, place) -> None:
    write_msasl(tmp_path, train=[msasl_entry(3, "beer", 1)], val=[], test=[], classes=None)
    place("SOUP.mp4", tmp_path / "clips" / "train" / "00000.mp4")
    rows, _ = read_msasl(tmp_path)
    assert [row.gloss for row in rows] == ["beer"]


def test_msasl_malformed_inputs_raise(tmp_path: Path) -> None:
    write_msasl(tmp_path, train=[msasl_entry(0, "hello", 1)], val=[], test=[], classes=["hello"])
    with pytest.raises(SlrpipeError, match=r"unknown field \{url\}"):
        read_msasl(tmp_path, clip_template="{url}.mp4")
    (tmp_path / "MSASL_train.json").write_text(json.dumps([{"text": "hello"}]), encoding="utf-8")
    with pytest.raises(SlrpipeError, match=r'MSASL_train\.json: missing key "label" in entry 0'):
        read_msasl(tmp_path)
    (tmp_path / "MSASL_train.json").write_text(json.dumps([{"label": "zero", "text": "hello"}]), encoding="utf-8")
    with pytest.raises(SlrpipeError, match=r"\"label\" of entry 0 is 'zero', not an integer"):
        read_msasl(tmp_path)
    (tmp_path / "MSASL_val.json").unlink()
    (tmp_path / "MSASL_train.json").write_text("[]", encoding="utf-8")
    with pytest.raises(SlrpipeError, match=r"MSASL_val\.json: file not found"):
        read_msasl(tmp_path)


# --- NMFs-CSL -------------------------------------------------------------------------------


def write_lists(root: Path, train: str, test: str) -> None:
    (root / "traintestlist").mkdir(exist_ok=True)
    (root / "traintestlist" / "trainlist01.txt").write_text(train, encoding="utf-8")
    (root / "traintestlist" / "testlist01.txt").write_text(test, encoding="utf-8")


@pytest.fixture
def nmfs_root(tmp_path: Path, place) -> Path:
    write_lists(
        tmp_path,
        train="000000/P01_s1_00_0_color.mp4 0\n000612/P02_s1_01_0_color.mp4 612\n",
        test="000000/P09_s1_00_0_color.mp4\n000612/P10_s1_01_0_color.mp4\norphan.mp4\n",
    )
    place("FOOTBALL.mp4", tmp_path / "videos" / "000000" / "P01_s1_00_0_color.mp4")
    place("SOUP.mp4", tmp_path / "videos" / "000612" / "P02_s1_01_0_color.mp4")
    place("test_video.mp4", tmp_path / "videos" / "000000" / "P09_s1_00_0_color.mp4")
    return tmp_path


def test_nmfs_csl_rows_follow_the_split_lists(nmfs_root: Path) -> None:
    rows, problems = read_nmfs_csl(nmfs_root)
    found = by_id(rows)
    assert sorted(found) == ["000000/P01_s1_00_0_color", "000000/P09_s1_00_0_color", "000612/P02_s1_01_0_color"]
    assert found["000000/P01_s1_00_0_color"] == ManifestRow(
        "000000/P01_s1_00_0_color", str(nmfs_root / "videos" / "000000" / "P01_s1_00_0_color.mp4"),
        KIND_VIDEO, "000000", "1", "train", -1,
    )
    assert (found["000612/P02_s1_01_0_color"].gloss, found["000612/P02_s1_01_0_color"].split) == ("000612", "train")
    assert (found["000000/P09_s1_00_0_color"].split, found["000000/P09_s1_00_0_color"].signer) == ("test", "9")
    assert problem_of(problems, "000612/P10_s1_01_0_color") == "clip not found"
    assert "no class folder in traintestlist/testlist01.txt line 3" in problem_of(problems, "orphan")
    assert [nmfs_csl_subset(row.gloss) for row in rows].count("normal") == 1


def test_nmfs_csl_problems_for_label_mismatch_and_frame_folders(tmp_path: Path, place) -> None:
    write_lists(tmp_path, train="000001/P01_a.mp4 2\n", test="000003/P09_b.mp4\n")
    place("SOUP.mp4", tmp_path / "videos" / "000001" / "P01_a.mp4")
    (tmp_path / "jpg_video" / "000003" / "P09_b").mkdir(parents=True)  # frames, never encoded
    rows, problems = read_nmfs_csl(tmp_path)
    assert rows == []
    assert "label 2 disagrees with class folder '000001'" in problem_of(problems, "000001/P01_a")
    assert "holds frames" in problem_of(problems, "000003/P09_b")


def test_nmfs_csl_subset_boundary() -> None:
    assert (nmfs_csl_subset("000609"), nmfs_csl_subset("000610"), nmfs_csl_subset("1066")) == (
        "confusing", "normal", "normal",
    )


@pytest.mark.parametrize(
    ("train", "message"),
    [
        ("000000/a.mp4 0 extra\n", "trainlist01.txt line 1: expected '<class>/<video> [label]', found 3 fields"),
        ("\n000000/a.mp4 zero\n", "trainlist01.txt line 2: label 'zero' is not an integer"),
    ],
)
def test_nmfs_csl_malformed_list_raises(tmp_path: Path, train: str, message: str) -> None:
    write_lists(tmp_path, train=train, test="")
    with pytest.raises(SlrpipeError) as caught:
        read_nmfs_csl(tmp_path)
    assert message in str(caught.value)


def test_nmfs_csl_missing_list_raises(tmp_path: Path) -> None:
    with pytest.raises(SlrpipeError, match=r"trainlist01\.txt: file not found"):
        read_nmfs_csl(tmp_path)


# --- SLR500 ---------------------------------------------------------------------------------


def test_slr500_split_by_signer_1_36_train_37_50_test(tmp_path: Path, place) -> None:
    place("FOOTBALL.mp4", tmp_path / "000000" / "P01_000000_0_color.mp4")
    place("SOUP.mp4", tmp_path / "000000" / "P37_000000_4_color.mp4")
    place("test_video.mp4", tmp_path / "000499" / "P36_000499_2_color.mp4")
    (tmp_path / "dictionary.txt").write_text("000000\t你\n", encoding="utf-8")  # not a clip: ignored
    rows, problems = read_slr500(tmp_path)
    assert problems == []
    found = by_id(rows)
    assert found["000000/P01_000000_0_color"] == ManifestRow(
        "000000/P01_000000_0_color", str(tmp_path / "000000" / "P01_000000_0_color.mp4"), KIND_VIDEO,
        "000000", "1", "train", -1,
    )
    assert (found["000000/P37_000000_4_color"].split, found["000000/P37_000000_4_color"].signer) == ("test", "37")
    assert (found["000499/P36_000499_2_color"].split, found["000499/P36_000499_2_color"].gloss) == ("train", "000499")


def test_slr500_misplaced_or_unnamed_clips_are_problems(tmp_path: Path, place) -> None:
    place("FOOTBALL.mp4", tmp_path / "000000" / "P01_a.mp4")
    place("SOUP.mp4", tmp_path / "stray.mp4")  # no class folder: no gloss
    place("SOUP.mp4", tmp_path / "000001" / "clip.mp4")  # no signer in the name
    place("SOUP.mp4", tmp_path / "000001" / "P51_a.mp4")  # outside the 50 signers
    rows, problems = read_slr500(tmp_path)
    assert [row.sample_id for row in rows] == ["000000/P01_a"]
    assert problem_of(problems, "stray") == "not in a class folder (expected <class id>/<video>)"
    assert problem_of(problems, "000001/clip") == "no P<signer>_ prefix in the file name"
    assert problem_of(problems, "000001/P51_a") == "signer 51 is outside the official 1-50"


def test_slr500_wrong_root_raises(tmp_path: Path, place) -> None:
    with pytest.raises(SlrpipeError, match="is not a folder"):
        read_slr500(tmp_path / "absent")
    with pytest.raises(SlrpipeError, match="no SLR500 videos"):
        read_slr500(tmp_path)
    place("SOUP.mp4", tmp_path / "color" / "000000" / "P01_a.mp4")  # root one level too high
    with pytest.raises(SlrpipeError, match="first of 1 skipped: color/000000/P01_a"):
        read_slr500(tmp_path)
