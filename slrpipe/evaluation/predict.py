"""`slrpipe predict`: the top-k glosses of new videos or pose files, with a fine-tuned model.

An input goes through exactly the code that prepared the training data: `Extractor.extract`
(pose estimation or import, the same 49 joints), `preprocess.normalize` with the settings
stored in the model file, and the loader's eval view (the whole sequence resampled to T'
frames, no random augmentation). A recording of the training set given here therefore
reaches the model as the same tensors as in training and evaluation.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import default_collate
from tqdm import tqdm

from slrpipe.config import AugmentParams, DatasetParams, ExtractParams, PreprocessParams
from slrpipe.data.dataset import eval_view
from slrpipe.errors import SampleError, SlrpipeError
from slrpipe.pose.extract import Extractor
from slrpipe.model.baseline import BaselineClassifier, features as baseline_features
from slrpipe.model.classifier import load_model
from slrpipe.pose.manifest import KIND_MP_FRAMES, KIND_VIDEO, ManifestRow, kind_of_path
from slrpipe.data.preprocess import normalize
from slrpipe.engine.runtime import resolve_device
from slrpipe.pose.sources.local import npy_shape
from slrpipe.engine.loop import to_device

Format = Literal["table", "json", "csv"]
NOT_AN_INPUT = "not a video, MMPose .json, MediaPipe .npy or frame folder"


@dataclass(frozen=True)
class PredictInput:
    path: Path
    kind: str | None  # a manifest kind; None when the path is none of them
    problem: str | None = None  # known before any processing (e.g. an empty folder)


@dataclass
class Prediction:
    input: str
    predictions: list[tuple[str, float]] = field(default_factory=list)  # (gloss, probability), best first
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        if self.error is not None:
            return {"input": self.input, "error": self.error}
        return {"input": self.input, "predictions": [{"gloss": g, "probability": round(p, 6)} for g, p in self.predictions]}


# ---- finding inputs ------------------------------------------------------------------------
def _natural(path: Path) -> list:
    """Sort key that puts 2.npy before 10.npy and sequence 9 before 10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]


def is_frame_folder(folder: Path) -> bool:
    """A folder of per-frame MediaPipe vectors, decided like the mp_data source: by the first
    .npy file's header (1-D = one frame), since (T, D) sequences use the same file names."""
    arrays = sorted(name for name in os.listdir(folder) if name.endswith(".npy") and not name.startswith("."))
    if not arrays:
        return False
    try:
        return len(npy_shape(folder / arrays[0])) == 1
    except (OSError, ValueError):
        return True  # unreadable: let the frame importer name the problem


def _kind(path: Path) -> str | None:
    if path.is_dir():
        return KIND_MP_FRAMES if is_frame_folder(path) else None
    return kind_of_path(path)


def _inputs_in(root: Path) -> list[PredictInput]:
    """Every video, MMPose JSON, (T, D) .npy and frame folder below `root`, in natural order."""
    found = []
    for folder, dirs, files in os.walk(root):
        folder_path = Path(folder)
        if is_frame_folder(folder_path):
            dirs[:] = []
            found.append(PredictInput(folder_path, KIND_MP_FRAMES))
            continue
        dirs[:] = sorted((d for d in dirs if not d.startswith(".")), key=_natural)
        for name in sorted((f for f in files if not f.startswith(".")), key=_natural):
            path = folder_path / name
            if (kind := kind_of_path(path)) is not None:
                found.append(PredictInput(path, kind))
    return found


def find_inputs(paths: Iterable[Path]) -> list[PredictInput]:
    """The user's paths as inputs, in the given order; a folder that is not itself a frame
    folder stands for every input inside it."""
    found: list[PredictInput] = []
    for path in paths:
        if path.is_dir() and not is_frame_folder(path):
            inside = _inputs_in(path)
            found.extend(inside or [PredictInput(path, None, f"no videos or pose files in folder ({NOT_AN_INPUT})")])
        elif not path.exists():
            found.append(PredictInput(path, None, "not found"))
        else:
            found.append(PredictInput(path, _kind(path)))
    return found


# ---- the model's input ---------------------------------------------------------------------
class Predictor:
    """A fine-tuned model with everything needed to prepare new inputs the way its training data was."""

    def __init__(self, model_path: Path, backend: Literal["mediapipe", "mmpose"] = "mediapipe", pose_config: str | None = None,
                 pose_checkpoint: Path | None = None, device: Literal["auto", "cpu", "cuda"] = "auto",
                 frame_size: tuple[int, int] | None = None, cache_dir: Path | None = None) -> None:
        if not model_path.is_file():
            raise SlrpipeError(f"model file {model_path} not found: run the finetune stage (dvc repro finetune) or pass --model")
        self.device = resolve_device(device)
        model, meta = load_model(model_path)
        self.model = model.to(self.device)
        self.glosses: list[str] = list(meta["glosses"])
        # Model files from before trunk_norm existed were trained on the frame form, whatever
        # the default is now.
        self.preprocess = PreprocessParams.model_validate({"trunk_norm": "frame", **meta["preprocess"]})
        self.augment = AugmentParams.from_saved(meta["augment"])
        # Pose files carry no image size: by default that of the training recordings.
        stored = meta["dataset"]
        size = tuple(frame_size or stored["frame_size"])
        # The Extractor reads only frame_size and fps of the dataset settings; source and root are placeholders.
        dataset = DatasetParams(source="manifest", root=Path("."), frame_size=size, fps=stored["fps"])
        extract = {"backend": backend, "device": device, "pose_checkpoint": pose_checkpoint}
        if pose_config:
            extract["pose_config"] = pose_config
        self.extractor = Extractor(dataset, ExtractParams(**extract), cache_dir)

    def top_k(self, k: int) -> int:
        return max(1, min(k, len(self.glosses)))

    def prepare(self, item: PredictInput) -> dict[str, dict[str, torch.Tensor]] | torch.Tensor:
        """One input -> the model's view (the baseline's: its feature vector); raises SampleError when it cannot be used."""
        if item.problem is not None:
            raise SampleError(item.problem)
        if item.kind is None:
            raise SampleError(NOT_AN_INPUT if item.path.exists() else "not found")
        if item.kind == KIND_VIDEO:
            self._check_video_backend()
        row = ManifestRow(sample_id=str(item.path), path=str(item.path), kind=item.kind, gloss="")
        sample = self.extractor.extract(row)
        normalized = normalize(sample.keypoints, sample.frame_size, self.preprocess)
        if isinstance(self.model, BaselineClassifier):
            return torch.from_numpy(baseline_features(normalized.coords, normalized.mask, normalized.trunk_origin,
                                                      normalized.trunk_unit, sample.frame_size, self.model.frames))
        return eval_view(normalized.coords, normalized.mask, self.augment)

    def _check_video_backend(self) -> None:
        # The Extractor's own messages name params.yaml keys; here the settings are options.
        settings = self.extractor.settings
        if settings.backend != "mmpose":
            return
        if settings.pose_checkpoint is None:
            raise SlrpipeError("--backend mmpose needs --pose-checkpoint, the weights of --pose-config "
                               "(e.g. `mim download mmpose --config <name> --dest checkpoints/`)")
        if not settings.pose_checkpoint.is_file():
            raise SlrpipeError(f"--pose-checkpoint {settings.pose_checkpoint} does not exist")

    @torch.no_grad()
    def probabilities(self, views: list[dict]) -> np.ndarray:
        """(N, classes) softmax scores of prepared views, in one forward pass."""
        logits = self.model(to_device(default_collate(views), self.device))
        return torch.softmax(logits.float(), dim=1).cpu().numpy()

    def _ranked(self, scores: np.ndarray, k: int) -> list[tuple[str, float]]:
        order = np.argsort(-scores, kind="stable")[:k]  # ties: the lower label first
        return [(self.glosses[i], float(scores[i])) for i in order]

    def predict(self, items: list[PredictInput], top_k: int = 5, batch_size: int = 32,
                progress: bool = True) -> Iterator[Prediction]:
        """Predictions in input order, yielded after each batch so long runs stream their output.

        An input that cannot be used yields an error; a setup problem (a missing backend or
        checkpoint) raises, since it would fail every input alike.
        """
        k = self.top_k(top_k)
        pending: list[tuple[PredictInput, dict | str]] = []
        ready = 0

        def flush() -> Iterator[Prediction]:
            views = [prepared for _, prepared in pending if not isinstance(prepared, str)]
            scores = iter(self.probabilities(views)) if views else iter(())
            for item, prepared in pending:
                if isinstance(prepared, str):
                    yield Prediction(str(item.path), error=prepared)
                else:
                    yield Prediction(str(item.path), self._ranked(next(scores), k))
            pending.clear()

        for item in tqdm(items, desc="predict", unit="input", disable=not progress or len(items) < 2,
                         leave=False, dynamic_ncols=True):
            try:
                pending.append((item, self.prepare(item)))
                ready += 1
            except SampleError as error:
                pending.append((item, str(error)))
            except SlrpipeError:
                raise
            except Exception as error:  # noqa: BLE001 - one broken file must not end the run
                pending.append((item, f"unexpected {type(error).__name__}: {error}"))
            if ready == batch_size:
                yield from flush()
                ready = 0
        yield from flush()


# ---- output --------------------------------------------------------------------------------
def json_line(prediction: Prediction) -> str:
    return json.dumps(prediction.as_dict(), ensure_ascii=False)


def csv_header(k: int) -> str:
    return _csv_line(["input", *(f"{name}_{rank}" for rank in range(1, k + 1) for name in ("gloss", "probability")), "error"])


def csv_row(prediction: Prediction, k: int) -> str:
    ranked = [value for gloss, p in prediction.predictions for value in (gloss, f"{p:.6f}")]
    return _csv_line([prediction.input, *ranked, *[""] * (2 * k - len(ranked)), prediction.error or ""])


def _csv_line(values: list[str]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow(values)
    return buffer.getvalue()


def table(predictions: list[Prediction], k: int) -> str:
    """Aligned columns: input, top-1 gloss, its probability, then the top k."""
    header = ["input", "top-1", "probability", f"top-{k}"]
    rows = []
    for p in predictions:
        if p.error is not None:
            rows.append([p.input, f"error: {p.error}"])
        else:
            gloss, probability = p.predictions[0]
            rows.append([p.input, gloss, f"{probability:.3f}", " | ".join(f"{g} {q:.3f}" for g, q in p.predictions)])
    # An error message spans the remaining columns, so it does not widen them.
    cells = [header, *rows]
    widths = [max(len(row[i]) for row in cells if i == 0 or len(row) == len(header)) for i in range(len(header) - 1)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row[:-1], widths)) + "  " + row[-1] for row in cells]
    return "\n".join(line.rstrip() for line in lines)


def write_predictions(predictions: Iterable[Prediction], fmt: Format, k: int, emit) -> int:
    """Write each prediction with `emit(line)` (streamed for json and csv); returns how many failed."""
    failed = 0
    if fmt == "table":
        collected = list(predictions)  # column widths need every row
        failed = sum(p.error is not None for p in collected)
        emit(table(collected, k))
        return failed
    if fmt == "csv":
        emit(csv_header(k))
    for prediction in predictions:
        failed += prediction.error is not None
        emit(json_line(prediction) if fmt == "json" else csv_row(prediction, k))
    return failed
