"""The simple baseline every report shows (issue 13): a multinomial logistic regression on
body-normalized, time-resampled joint coordinates of the hands and the trunk.

Input of one sample (`features`): the trunk placed by the body form of preprocess (shoulder
midpoint at the centre, 2.5 shoulder widths per unit; `preprocess.trunk_transform`, whatever
`preprocess.trunk_norm` the dataset was made with), the hands as preprocess crops them (in [0, 1]
of their box), all 49 joints resampled to BASELINE_FRAMES frames and flattened; a joint not seen
is 0, as the deep model sees it. The classifier standardizes each feature and applies the linear
layer the fit found. Its model file holds only tensors and plain values, so it loads with
`torch.load(weights_only=True)` like the deep model's, and evaluate and predict take either.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from slrpipe.config import PreprocessParams
from slrpipe.data.augment import resample
from slrpipe.data.dataset import PoseDataset
from slrpipe.data.preprocess import trunk_transform
from slrpipe.errors import SlrpipeError
from slrpipe.h5io import RaggedFile
from slrpipe.pose import joints

BASELINE_FORMAT = "slrpipe.baseline/1"
# Few frames: a linear model cannot align two performances in time, so a coarse grid of key
# poses generalizes better than a fine one (and keeps 49 x 2 x 16 = 1568 features).
BASELINE_FRAMES = 16
# The stored mask is the score test of preprocess already: a masked shoulder scores 0, a kept one 1.
_BODY = PreprocessParams(trunk_norm="body", score_threshold=0.5)


def body_trunk(coords: np.ndarray, mask: np.ndarray, trunk_origin: np.ndarray, trunk_unit: np.ndarray,
               frame_size: tuple[int, int]) -> np.ndarray:
    """(T, 49, 2) preprocess coordinates with the trunk moved into the body form: back to pixels by
    the sample's stored placement, then `preprocess.trunk_transform` with `trunk_norm: body` (over
    the frames the dataset kept). A sample whose shoulders are never seen keeps the frame form."""
    coords = np.asarray(coords, dtype=np.float64).copy()
    mask = np.asarray(mask, dtype=bool)
    pixels = coords[:, joints.TRUNK] * np.asarray(trunk_unit, dtype=np.float64) + np.asarray(trunk_origin, dtype=np.float64)
    keypoints = np.zeros(coords.shape[:2] + (3,))
    keypoints[:, joints.TRUNK, :2] = pixels
    keypoints[:, joints.TRUNK, 2] = mask[:, joints.TRUNK]
    origin, unit, _ = trunk_transform(keypoints, frame_size, _BODY)
    coords[:, joints.TRUNK] = (pixels - origin) / unit
    coords[~mask] = 0.0
    return coords


def features(coords: np.ndarray, mask: np.ndarray, trunk_origin: np.ndarray, trunk_unit: np.ndarray,
             frame_size: tuple[int, int], frames: int = BASELINE_FRAMES) -> np.ndarray:
    """One sample's (frames * 49 * 2,) float32 input of the baseline."""
    placed = body_trunk(coords, mask, trunk_origin, trunk_unit, frame_size)
    resampled, _ = resample(placed, np.asarray(mask, dtype=bool), 0, len(placed), frames)
    return resampled.reshape(-1).astype(np.float32)


def dataset_features(dataset: PoseDataset, frames: int = BASELINE_FRAMES) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) inputs and (N,) labels of every sample of `dataset`, in its order."""
    with RaggedFile(dataset.path) as source:
        available = source.column("sample_id")
        sizes = source.column("frame_size")
        try:
            origins, units = source.column("trunk_origin"), source.column("trunk_unit")
        except KeyError:  # made before trunk_norm existed: the frame form, origin 0, 1 unit = the frame size
            origins, units = np.zeros((len(available), 2)), np.asarray(sizes, dtype=np.float64)
    rows = []
    for position, index in enumerate(dataset.indices):
        coords, mask = dataset.sequence(position)
        size = tuple(int(v) for v in sizes[index])
        rows.append(features(coords, mask, origins[index], units[index], size, frames))
    width = frames * joints.NUM_JOINTS * 2
    inputs = np.stack(rows) if rows else np.zeros((0, width), dtype=np.float32)
    return inputs, dataset.labels[dataset.indices]


class BaselineClassifier(nn.Module):
    """logits = ((x - mean) / scale) @ weight.T + bias, all held as buffers (a fitted model, not trained here)."""

    def __init__(self, mean: torch.Tensor, scale: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                 frames: int = BASELINE_FRAMES) -> None:
        super().__init__()
        if weight.ndim != 2 or weight.shape[1] != mean.shape[0] or scale.shape != mean.shape or bias.shape != weight.shape[:1]:
            raise SlrpipeError(f"baseline weights do not fit: mean {tuple(mean.shape)}, scale {tuple(scale.shape)}, "
                               f"weight {tuple(weight.shape)}, bias {tuple(bias.shape)}")
        self.frames = frames
        for name, value in (("mean", mean), ("scale", scale), ("weight", weight), ("bias", bias)):
            self.register_buffer(name, value.float())

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return ((inputs.float() - self.mean) / self.scale) @ self.weight.T + self.bias


@torch.no_grad()
def score_baseline(model: BaselineClassifier, dataset: PoseDataset) -> tuple[np.ndarray, np.ndarray]:
    """Softmax scores (N, C) and labels (N,) of every sample of `dataset`, in its order."""
    inputs, labels = dataset_features(dataset, model.frames)
    logits = model(torch.from_numpy(inputs).to(model.mean.device))
    return torch.softmax(logits, dim=1).cpu().numpy(), labels.astype(np.int64)


def baseline_state(model: BaselineClassifier) -> dict:
    """What a model file stores of the classifier: tensors and its frame count."""
    return {"model": {k: v.cpu() for k, v in model.state_dict().items()}, "baseline": {"frames": model.frames}}


def load_baseline(state: dict, source: str) -> BaselineClassifier:
    """The classifier of a loaded baseline model file (format BASELINE_FORMAT)."""
    try:
        weights = state["model"]
        model = BaselineClassifier(weights["mean"], weights["scale"], weights["weight"], weights["bias"],
                                   int(state["baseline"]["frames"]))
    except (KeyError, TypeError, ValueError) as error:
        raise SlrpipeError(f"{source}: not a complete baseline model file ({error})") from None
    return model.eval()
