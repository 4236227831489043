"""Adapters for the official annotation files of WLASL, MS-ASL, NMFs-CSL and SLR500.

Each reader returns manifest rows (label left at -1; `manifest.finalize` assigns labels) and
problems. Errors are split by who can fix what:

* a listed clip that is not on disk, or an entry whose gloss / label value is empty, is a
  `Problem` for that one sample: reported, never raised, never silently dropped;
* a missing annotation file, or one whose structure is wrong (invalid JSON, a required key
  absent, a value of the wrong type, a list line with too many fields), raises
  `SlrpipeError` with one line naming the file and the place. JSON entries are numbered from
  0 as in the file's list, text lines from 1.

Format facts and where they come from (public repositories, read through the code index):

WLASL (dxli94/WLASL)
    README.md: `WLASL_vx.x.json` is a list of {gloss, instances}; each instance has bbox, fps,
    frame_start, frame_end, instance_id, signer_id (int), source, split, url, variation_id and
    video_id (str). WLASL100/300/1000/2000 are "the top-K glosses from the WLASL_vx.x.json
    file", i.e. the first K entries in file order. start_kit/data_reader.py: split is one of
    "train", "val", "test" (anything else is "Invalid split."). start_kit/preprocess.py: the
    clips land in `videos/<video_id>.mp4`, YouTube sources already cut to
    frame_start..frame_end, other sources copied whole (so rows carry no frame range).

MS-ASL (the release README and JSON files, mirrored in iamgarcia/msasl-video-downloader)
    README.md: MSASL_train.json (16,054), MSASL_val.json (5,287), MSASL_test.json (4,172), each
    a list of clips with url, start_time, end_time (seconds), label (0-999), signer_id, box,
    text ("the gloss for this clip which match the 'label'"), width, height, fps;
    MSASL_classes.json lists the 1000 class names, class i being the i-th; subsets MS-ASL100/
    200/500/1000 keep "'label' less than" N. MSASL_test.json: entries also carry org_text,
    clean_text, signer, start, end, file and review. clean_text can differ from the class
    ("police officer" with label 426, text "police"), so the gloss is the class name of the
    label (MSASL_classes.json, falling back to `text`), never clean_text.
    Clips: the release ships URLs only and no naming convention for downloaded clips; the
    downloaders in use disagree (AI4Bharat/OpenHands openhands/datasets/isolated/msasl.py
    reads videos/<clean_text>/<signer_id>; sakura2233565548/MASA feeder/single_dataset/
    MSASL.py reads per-split folders listed in order in traintestlist/{train,val,test}list01.txt;
    other scripts name files <youtube id>_<text>[_<label>_<start>_<end>].mp4). Hence a
    template, see `read_msasl`; the default, one clip per entry by split and position, matches
    `DatasetParams.msasl_clip_template`.

NMFs-CSL (Hu et al., "Global-local enhancement network for NMFs-aware sign language
recognition", arXiv 2008.10428)
    1,067 Chinese sign words; 32,010 videos, 610 "confusing" + 457 "normal" words (figures
    quoted by third-party READMEs); 25,608 train / 6,402 test (the Awesome-Sign-Language list
    README). Split lists as read by the dataset authors' group in sakura2233565548/MASA
    feeder/single_dataset/NMFs_CSL.py, UCF101 style: traintestlist/trainlist01.txt with lines
    "<class>/<video> <label>" and traintestlist/testlist01.txt with lines "<class>/<video>",
    the class id being the integer value of the class folder. The same feeder treats labels
    below 610 as one recording block (1000x720 frames) and the rest as another (540x540), which
    matches 610 confusing words first: `slrpipe.data.subsets.nmfs_csl_subset` maps a class to its subset by that
    boundary. This is an inference, not a published table; rows cannot carry the subset (the
    manifest has no column for it). The release is consumed as JPEG frame folders
    (jpg_video/<class>/<video>/image_00001.jpg in FangyunWei/SLRT NLA-SLR/dataset/
    VideoLoader.py and in mmaction2 configs of other users); this pipeline decodes videos, so
    the expected layout is `videos/<class>/<video>.mp4` (encode the frame folders first), and a
    missing clip whose frame folder exists says so.

SLR500 (the USTC isolated CSL dataset, "CSL-500")
    500 class folders of videos; 50 signers x 5 repetitions x 500 words = 125,000 videos
    (0aqz0/SLR dataset.py: `signers = 50`, `repetition = 5`); class folders are zero-padded
    numbers (000-499 or 000000-000499 depending on the copy) and a file name starts with
    P<signer>_ (AI4Bharat/OpenHands openhands/datasets/isolated/csl.py: "P01: 1, signer ID";
    lwj2018/iSLR process/generate_list.py: `int(p[0].lstrip('P'))`). Official split: signers
    1-36 train, 37-50 test: a third-party split script over <class>/P<n>_* with
    `n_train_person = 36` and `person <= n_train_person`, and the 90,000 / 35,000 train / test
    counts of the Awesome-Sign-Language list README (36 x 5 x 500 and 14 x 5 x 500). OpenHands'
    own filter (`signer_id <= 35`) would give 35 train signers and disagrees with those counts.
    A signer number outside 1-50 (a copy renumbered from 0) is reported, not guessed. The gloss
    is the class folder name as published, which sorts in class order.
"""

from __future__ import annotations

import json
import os
import re
import string
from pathlib import Path, PurePosixPath
from typing import Any

from slrpipe.errors import RootError, SlrpipeError
from slrpipe.pose.manifest import KIND_VIDEO, SPLITS, VIDEO_SUFFIXES, ManifestRow, Problem

Rows = tuple[list[ManifestRow], list[Problem]]

WLASL_ANNOTATION = "WLASL_v0.3.json"
WLASL_VIDEO_DIR = "videos"

MSASL_SPLIT_FILES = {"train": "MSASL_train.json", "val": "MSASL_val.json", "test": "MSASL_test.json"}
MSASL_CLASSES_FILE = "MSASL_classes.json"
# Relative to the dataset root (or absolute). Fields: see MSASL_TEMPLATE_FIELDS.
DEFAULT_MSASL_CLIP_TEMPLATE = "clips/{split}/{index:05d}.mp4"
MSASL_TEMPLATE_FIELDS = (
    "split", "index", "label", "gloss", "signer_id", "youtube_id", "start_time", "end_time", "text", "clean_text",
)

NMFS_CSL_LISTS = {"train": "traintestlist/trainlist01.txt", "test": "traintestlist/testlist01.txt"}
NMFS_CSL_VIDEO_DIR = "videos"
NMFS_CSL_FRAMES_DIR = "jpg_video"

SLR500_SIGNERS = range(1, 51)
SLR500_TRAIN_SIGNERS = range(1, 37)

_SIGNER_PREFIX = re.compile(r"^P(\d+)_")
_YOUTUBE_ID = re.compile(r"(?:[?&]v=|youtu\.be/)([A-Za-z0-9_-]{11})")


# --- shared helpers -------------------------------------------------------------------------


def _dataset_root(root: Path) -> Path:
    if not root.is_dir():
        raise RootError(f"{root} is not a folder")
    # absolute() rather than resolve(): a symlinked clip keeps the path the user laid out.
    return root.absolute()


def _check_num_classes(num_classes: int | None) -> None:
    if num_classes is not None and num_classes <= 0:
        raise SlrpipeError(f"num_classes must be positive, got {num_classes}")


def _load_json(path: Path) -> Any:
    if not path.is_file():
        raise SlrpipeError(f"{path}: file not found")
    try:
        # utf-8-sig: files re-saved by Windows editors start with a byte-order mark.
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as error:
        raise SlrpipeError(f"{path}: not UTF-8 text (byte {error.start})") from None
    except json.JSONDecodeError as error:
        raise SlrpipeError(f"{path}: invalid JSON at line {error.lineno}, column {error.colno}: {error.msg}") from None


def _load_json_list(path: Path, what: str) -> list[Any]:
    content = _load_json(path)
    if not isinstance(content, list):
        raise SlrpipeError(f"{path}: expected a JSON list of {what}, found a {type(content).__name__}")
    return content


def _require(entry: Any, key: str, path: Path, where: str) -> Any:
    if not isinstance(entry, dict):
        raise SlrpipeError(f"{path}: {where} is a {type(entry).__name__}, not a JSON object")
    if key not in entry:
        raise SlrpipeError(f'{path}: missing key "{key}" in {where}')
    return entry[key]


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def _add_clip(rows: list[ManifestRow], problems: list[Problem], sample_id: str, clip: Path,
              gloss: str, signer: str, split: str, missing: str = "clip not found") -> None:
    if clip.is_file():
        rows.append(ManifestRow(sample_id, str(clip), KIND_VIDEO, gloss, signer, split))
    else:
        problems.append(Problem(sample_id, str(clip), missing))


def _signer_number(file_name: str) -> int | None:
    match = _SIGNER_PREFIX.match(file_name)
    return int(match.group(1)) if match else None


# --- WLASL ----------------------------------------------------------------------------------


def _wlasl_annotation(root: Path) -> Path:
    """WLASL_v0.3.json; an older WLASL_v*.json (same format) only when v0.3 is absent."""
    current = root / WLASL_ANNOTATION
    if current.is_file():
        return current
    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", path.stem))
    older = sorted(root.glob("WLASL_v*.json"), key=version)
    return older[-1] if older else current


def read_wlasl(root: Path, num_classes: int | None = None) -> Rows:
    """Rows of WLASL, or of WLASL<num_classes>: the first num_classes glosses of the file."""
    root = _dataset_root(root)
    _check_num_classes(num_classes)
    annotation = _wlasl_annotation(root)
    entries = _load_json_list(annotation, "gloss entries")
    videos = root / WLASL_VIDEO_DIR
    rows: list[ManifestRow] = []
    problems: list[Problem] = []
    for index, entry in enumerate(entries):
        where = f"entry {index}"
        gloss = _text(_require(entry, "gloss", annotation, where))
        instances = _require(entry, "instances", annotation, where)
        if not isinstance(instances, list):
            raise SlrpipeError(f'{annotation}: "instances" of {where} is a {type(instances).__name__}, not a list')
        # The whole file is checked even when a subset is read: a broken file is broken.
        selected = num_classes is None or index < num_classes
        for number, instance in enumerate(instances):
            place = f"{where}, instance {number}"
            video_id = _text(_require(instance, "video_id", annotation, place))
            split = _text(_require(instance, "split", annotation, place)).lower()
            if not selected:
                continue
            if not video_id:
                problems.append(Problem(f"{annotation.name} {place}", "", "empty video_id"))
                continue
            clip = videos / f"{video_id}.mp4"
            if not gloss:
                problems.append(Problem(video_id, str(clip), f"no gloss ({where})"))
            elif split not in SPLITS:
                problems.append(Problem(video_id, str(clip), f"split {split!r} is not one of {', '.join(SPLITS)}"))
            else:
                _add_clip(rows, problems, video_id, clip, gloss, _text(instance.get("signer_id")), split)
    return rows, problems


# --- MS-ASL ---------------------------------------------------------------------------------


def _check_clip_template(template: str) -> None:
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as error:
        raise SlrpipeError(f"MS-ASL clip template {template!r}: {error}") from None
    for name in names:
        base = re.split(r"[.\[]", name, maxsplit=1)[0]
        if base not in MSASL_TEMPLATE_FIELDS:
            raise SlrpipeError(
                f"MS-ASL clip template {template!r}: unknown field {{{name}}} (known: {', '.join(MSASL_TEMPLATE_FIELDS)})"
            )


def _msasl_classes(root: Path) -> list[str] | None:
    """Class names by label, or None when the (optional) classes file is absent."""
    path = root / MSASL_CLASSES_FILE
    if not path.exists():
        return None
    classes = _load_json_list(path, "class names")
    for index, name in enumerate(classes):
        if not isinstance(name, str):
            raise SlrpipeError(f"{path}: entry {index} is a {type(name).__name__}, not a class name")
    return [name.strip() for name in classes]


def _msasl_label(entry: Any, path: Path, index: int) -> int | None:
    """The entry's label; None when it is empty. A label of the wrong type is a broken file."""
    label = _require(entry, "label", path, f"entry {index}")
    if label is None or label == "":
        return None
    if isinstance(label, bool) or not isinstance(label, int):
        raise SlrpipeError(f'{path}: "label" of entry {index} is {label!r}, not an integer')
    return label


def _youtube_id(url: str) -> str:
    match = _YOUTUBE_ID.search(url)
    return match.group(1) if match else ""


def _msasl_clip(root: Path, template: str, fields: dict[str, Any]) -> Path:
    try:
        relative = template.format(**fields)
    except (ValueError, TypeError, IndexError, AttributeError) as error:
        raise SlrpipeError(f"MS-ASL clip template {template!r}: {error}") from None
    clip = Path(relative)
    return clip if clip.is_absolute() else root / clip


def read_msasl(root: Path, num_classes: int | None = None,
               clip_template: str = DEFAULT_MSASL_CLIP_TEMPLATE) -> Rows:
    """Rows of MS-ASL, or of MS-ASL<num_classes>: the entries whose label is below num_classes.

    MS-ASL ships URLs, not clips. `clip_template` says where the user's downloaded clip of an
    entry is, already cut to [start_time, end_time]: a `str.format` template, relative to
    `root` unless absolute, with the fields {split} (train/val/test), {index} (0-based position
    in that split's file), {label}, {gloss}, {signer_id}, {youtube_id} (from the url),
    {start_time}, {end_time}, {text} and {clean_text}; e.g. the default
    "clips/{split}/{index:05d}.mp4", or "{youtube_id}_{start_time:.3f}.mp4". The sample id is
    "<split>_<index:05d>", stable as long as the official files are.
    """
    root = _dataset_root(root)
    _check_num_classes(num_classes)
    _check_clip_template(clip_template)
    classes = _msasl_classes(root)
    rows: list[ManifestRow] = []
    problems: list[Problem] = []
    for split, file_name in MSASL_SPLIT_FILES.items():
        path = root / file_name
        for index, entry in enumerate(_load_json_list(path, "clips")):
            sample_id = f"{split}_{index:05d}"
            label = _msasl_label(entry, path, index)
            if label is None:
                problems.append(Problem(sample_id, "", f"no label ({file_name} entry {index})"))
                continue
            if num_classes is not None and label >= num_classes:
                continue
            text = _text(entry.get("text"))
            if classes is None:
                gloss = text or _text(entry.get("clean_text"))
            else:
                gloss = classes[label] if 0 <= label < len(classes) else ""
            fields = {
                "split": split, "index": index, "label": label, "gloss": gloss,
                "signer_id": _text(entry.get("signer_id")), "youtube_id": _youtube_id(_text(entry.get("url"))),
                "start_time": entry.get("start_time"), "end_time": entry.get("end_time"),
                "text": text, "clean_text": _text(entry.get("clean_text")),
            }
            if not gloss:
                where = f"outside {MSASL_CLASSES_FILE}" if classes is not None else "with no text"
                problems.append(Problem(sample_id, "", f"no gloss: label {label} {where} ({file_name} entry {index})"))
                continue
            clip = _msasl_clip(root, clip_template, fields)
            _add_clip(rows, problems, sample_id, clip, gloss, fields["signer_id"], split)
    return rows, problems


# --- NMFs-CSL -------------------------------------------------------------------------------


def _read_split_list(path: Path) -> list[tuple[int, str, int | None]]:
    """(line number, entry, label or None) of a UCF101-style list: "<entry> [label]" per line."""
    if not path.is_file():
        raise SlrpipeError(f"{path}: file not found")
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as error:
        raise SlrpipeError(f"{path}: not UTF-8 text (byte {error.start})") from None
    entries: list[tuple[int, str, int | None]] = []
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) > 2:
            raise SlrpipeError(f"{path} line {number}: expected '<class>/<video> [label]', found {len(fields)} fields")
        label: int | None = None
        if len(fields) == 2:
            try:
                label = int(fields[1])
            except ValueError:
                raise SlrpipeError(f"{path} line {number}: label {fields[1]!r} is not an integer") from None
        entries.append((number, fields[0], label))
    return entries


def read_nmfs_csl(root: Path) -> Rows:
    """Rows of NMFs-CSL from its train/test lists; clips at videos/<class>/<video>.mp4.

    A list entry without a video suffix gets ".mp4". The gloss is the class folder as written
    in the list; the train list's label column is checked against it. The signer is the
    number of a leading "P<n>_" in the file name (the USTC convention of SLR500) when there is
    one, else "".
    """
    root = _dataset_root(root)
    videos = root / NMFS_CSL_VIDEO_DIR
    rows: list[ManifestRow] = []
    problems: list[Problem] = []
    for split, list_name in NMFS_CSL_LISTS.items():
        list_path = root / list_name
        for number, raw_entry, label in _read_split_list(list_path):
            entry = PurePosixPath(raw_entry.replace("\\", "/").removeprefix("./"))
            has_suffix = entry.suffix.lower() in VIDEO_SUFFIXES
            stem = entry.with_suffix("") if has_suffix else entry
            sample_id = stem.as_posix()
            clip = videos / (entry if has_suffix else entry.with_name(entry.name + ".mp4"))
            where = f"{list_name} line {number}"
            if len(entry.parts) < 2:
                problems.append(Problem(sample_id, str(clip), f"no class folder in {where} (expected <class>/<video>)"))
                continue
            gloss = entry.parts[-2]
            if label is not None and (not gloss.isdigit() or int(gloss) != label):
                problems.append(Problem(sample_id, str(clip), f"{where}: label {label} disagrees with class folder {gloss!r}"))
                continue
            signer = _signer_number(entry.name)
            frames = root / NMFS_CSL_FRAMES_DIR / stem
            missing = (f"clip not found; {frames} holds frames: encode them to {clip.name} first"
                       if frames.is_dir() else "clip not found")
            _add_clip(rows, problems, sample_id, clip, gloss, "" if signer is None else str(signer), split, missing)
    return rows, problems


# --- SLR500 ---------------------------------------------------------------------------------


def read_slr500(root: Path) -> Rows:
    """Rows of SLR500 laid out as <root>/<class id>/P<signer>_*.<video>, split by signer."""
    root = _dataset_root(root)
    rows: list[ManifestRow] = []
    problems: list[Problem] = []
    # followlinks: datasets are often assembled from symlinked class folders.
    for folder, dirs, files in os.walk(root, followlinks=True):
        dirs[:] = sorted(name for name in dirs if not name.startswith("."))
        for name in sorted(files):
            clip = Path(folder) / name
            if name.startswith(".") or clip.suffix.lower() not in VIDEO_SUFFIXES:
                continue  # dictionary.txt, depth/skeleton side files: not clips
            relative = clip.relative_to(root)
            sample_id = relative.with_suffix("").as_posix()
            signer = _signer_number(name)
            if len(relative.parts) != 2 or not relative.parts[0].isdigit():
                problems.append(Problem(sample_id, str(clip), "not in a class folder (expected <class id>/<video>)"))
            elif signer is None:
                problems.append(Problem(sample_id, str(clip), "no P<signer>_ prefix in the file name"))
            elif signer not in SLR500_SIGNERS:
                problems.append(Problem(sample_id, str(clip), f"signer {signer} is outside the official 1-50"))
            else:
                split = "train" if signer in SLR500_TRAIN_SIGNERS else "test"
                rows.append(ManifestRow(sample_id, str(clip), KIND_VIDEO, relative.parts[0], str(signer), split))
    if not rows:
        # Nothing usable is a wrong root (often one level too high), not a few bad samples.
        found = f"; first of {len(problems)} skipped: {problems[0].sample_id}: {problems[0].problem}" if problems else ""
        raise RootError(f"{root}: no SLR500 videos as <class id>/P<signer>_*.mp4{found}")
    return rows, problems
