"""The files the stages write: ragged per-sample sequences in one HDF5 file, written atomically and
read lazily; atomic text, JSON and gloss-list files.

Layout: every per-frame array of all samples is concatenated along time under `frames/`;
`samples/offsets` (N + 1) says where sample i starts and ends, and the other `samples/`
datasets hold one value per sample. Reading one sample reads only its slice.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from slrpipe.errors import SlrpipeError, restore_hint

STRING = h5py.string_dtype("utf-8")
_CHUNK_FRAMES = 256


@contextmanager
def atomic_path(path: Path):
    """Yield a temporary path next to `path`; move it into place only if the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()


class RaggedWriter:
    """Append samples one at a time (memory stays at one sample), then `close` moves the file into place.

        with RaggedWriter(path, {"keypoints": ((49, 3), np.float32)}) as writer:
            writer.append({"keypoints": array}, sample_id="a", label=3)
            writer.attrs["glosses"] = [...]

    `frames` maps each per-frame array's name to its per-frame shape and dtype; every
    `append` gives each of them with the same length T. Per-sample values are keyword
    arguments: strings become UTF-8 datasets, numbers and small arrays numeric ones. An
    exception inside the `with` block leaves no file behind.
    """

    def __init__(self, path: Path, frames: Mapping[str, tuple[tuple[int, ...], Any]]) -> None:
        self.path = Path(path)
        self._frame_specs = dict(frames)
        self._columns: dict[str, list[Any]] = {}
        self._offsets = [0]
        self.attrs: dict[str, Any] = {}
        self._atomic = atomic_path(self.path)
        self._temporary = self._atomic.__enter__()
        self._handle = h5py.File(self._temporary, "w")
        group = self._handle.create_group("frames")
        for name, (shape, dtype) in self._frame_specs.items():
            group.create_dataset(
                name,
                shape=(0,) + tuple(shape),
                maxshape=(None,) + tuple(shape),
                dtype=dtype,
                chunks=(_CHUNK_FRAMES,) + tuple(shape),
                compression="gzip",
                compression_opts=4,
                shuffle=True,
            )

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def append(self, frames: Mapping[str, np.ndarray], **values: Any) -> None:
        lengths = {len(array) for array in frames.values()}
        if set(frames) != set(self._frame_specs) or len(lengths) != 1:
            raise ValueError(f"append needs {sorted(self._frame_specs)} with one common length")
        if self._columns and set(values) != set(self._columns):
            raise ValueError(f"append needs the same per-sample values as before: {sorted(self._columns)}")
        length = lengths.pop()
        start = self._offsets[-1]
        for name, array in frames.items():
            dataset = self._handle["frames"][name]
            dataset.resize(start + length, axis=0)
            dataset[start : start + length] = array
        self._offsets.append(start + length)
        for key, value in values.items():
            self._columns.setdefault(key, []).append(value)

    def values(self, name: str) -> list[Any]:
        """The per-sample values appended so far under `name`."""
        return list(self._columns.get(name, []))

    def remap_values(self, name: str, mapping: Mapping[Any, Any]) -> None:
        """Replace the per-sample value `name` of every appended sample by mapping[value] (e.g. renumbered labels)."""
        if name in self._columns:
            self._columns[name] = [mapping[value] for value in self._columns[name]]

    def close(self) -> None:
        group = self._handle.create_group("samples")
        group.create_dataset("offsets", data=np.asarray(self._offsets, dtype=np.int64))
        for name, values in self._columns.items():
            if isinstance(values[0], str):
                group.create_dataset(name, data=np.array(values, dtype=object), dtype=STRING)
            else:
                group.create_dataset(name, data=np.asarray(values))
        for key, value in self.attrs.items():
            self._handle.attrs[key] = json.dumps(value) if isinstance(value, (dict, list, tuple)) else value
        self._handle.close()
        self._atomic.__exit__(None, None, None)

    def abort(self) -> None:
        self._handle.close()
        self._atomic.__exit__(RuntimeError, RuntimeError("aborted"), None)

    def __enter__(self) -> RaggedWriter:
        return self

    def __exit__(self, error_type: object, *_: object) -> None:
        if error_type is None:
            self.close()
        else:
            self.abort()


class RaggedFile:
    """Lazy reader: `len(f)`, `f.frames(name, i)`, `f.column(name)`; open once per process."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise SlrpipeError(f"{self.path} not found")
        try:
            self._handle = h5py.File(self.path, "r")
        except OSError as error:
            raise SlrpipeError(f"{self.path}: damaged or truncated HDF5 file ({_h5_reason(error)}): {restore_hint(self.path)}") from None
        try:
            self.offsets = self._handle["samples/offsets"][:]
            # Looking a dataset up by name costs as much as reading a short sample: do it once.
            self._frames = {name: self._handle["frames"][name] for name in self._handle["frames"]}
        except (KeyError, OSError) as error:
            self._handle.close()
            reason = "no samples/offsets" if isinstance(error, KeyError) else _h5_reason(error)
            raise SlrpipeError(f"{self.path}: not a file of slrpipe samples ({reason}): {restore_hint(self.path)}") from None

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __enter__(self) -> RaggedFile:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._handle.close()

    def has_frames(self, name: str) -> bool:
        return name in self._frames

    def frames(self, name: str, index: int) -> np.ndarray:
        start, stop = self.offsets[index], self.offsets[index + 1]
        try:
            return self._frames[name][start:stop]
        except OSError as error:  # a damaged compressed chunk
            raise SlrpipeError(f"{self.path}: sample {index} is unreadable ({_h5_reason(error)}): {restore_hint(self.path)}") from None

    def column(self, name: str) -> list[Any] | np.ndarray:
        if name not in self._handle["samples"]:
            if len(self) == 0:  # an empty file has no per-sample columns at all
                return []
            raise KeyError(f"{self.path}: no per-sample column {name!r}")
        dataset = self._handle["samples"][name]
        if h5py.check_string_dtype(dataset.dtype) is not None:
            return [value.decode("utf-8") if isinstance(value, bytes) else value for value in dataset[:]]
        return dataset[:]

    def attr(self, key: str, default: Any = None) -> Any:
        value = self._handle.attrs.get(key, default)
        if isinstance(value, str) and value[:1] in "[{":
            return json.loads(value)
        return value


def _h5_reason(error: OSError) -> str:
    """The reason inside h5py's message: 'Unable to ... file (truncated file: eof = 1)' -> 'truncated file: eof = 1'."""
    found = re.search(r"\((.+)\)\s*$", str(error))
    return found.group(1) if found else str(error).splitlines()[0]


def file_digest(path: Path) -> str:
    """SHA-256 of a file's content."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


GLOSSES_FILE = "glosses.txt"
DATASET_FILE = "dataset.h5"  # what the preprocess stage writes and the training loaders read


def write_glosses(path: Path, glosses: list[str]) -> None:
    """One gloss per line, in label order: line i (from 0) is label i."""
    write_text_atomic(path, "".join(f"{gloss}\n" for gloss in glosses))


def write_json(path: Path, data: dict) -> None:
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")
