"""Fitting the logistic-regression baseline (slrpipe.model.baseline) on the training split.

The regularization strength C is the one decision, taken on the validation split (best top-1;
a tie goes to the smaller C, the simpler model) and never on the test split; without a
validation split it is DEFAULT_C. The model is fitted on the training split only, the same
samples (and label subset) the deep model trains on.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from slrpipe.config import DatasetParams, Params
from slrpipe.data.dataset import PoseDataset
from slrpipe.data.frames import resolve_frames
from slrpipe.data.subsets import subset_key
from slrpipe.engine.live import log_epoch, open_live
from slrpipe.errors import SlrpipeError
from slrpipe.h5io import RaggedFile
from slrpipe.model.baseline import BASELINE_FRAMES, BaselineClassifier, dataset_features
from slrpipe.model.classifier import save_model

log = logging.getLogger(__name__)

C_GRID = (0.01, 0.1, 1.0, 10.0)
DEFAULT_C = 1.0
MAX_ITER = 2000
# The logit of a class the training split lacks: the fit knows nothing of it, so it is never predicted.
ABSENT_CLASS_LOGIT = -1e4


@dataclass
class BaselineFit:
    model: BaselineClassifier
    C: float
    val_top1: float | None  # of the chosen C; None without a validation split
    train_top1: float
    glosses: list[str]


def fit_logistic(inputs: np.ndarray, labels: np.ndarray, classes: int, C: float, seed: int = 0,
                 frames: int = BASELINE_FRAMES) -> BaselineClassifier:
    """Standardize, fit a multinomial logistic regression, return it as a BaselineClassifier over all `classes`."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    present = np.unique(labels)
    if len(present) < 2:
        raise SlrpipeError(f"the baseline needs training samples of at least 2 classes, found {len(present)}")
    mean = inputs.mean(axis=0)
    scale = inputs.std(axis=0)
    scale[scale < 1e-8] = 1.0  # a constant feature (a joint never seen) stays 0 after centring
    standardized = (inputs - mean) / scale
    with warnings.catch_warnings():
        # A separable training set never converges in the strict sense; the solution at max_iter is what we keep.
        warnings.simplefilter("ignore", ConvergenceWarning)
        fitted = LogisticRegression(C=C, max_iter=MAX_ITER, random_state=seed).fit(standardized, labels)
    weight = np.zeros((classes, inputs.shape[1]))
    bias = np.full(classes, ABSENT_CLASS_LOGIT)
    if len(present) == 2:  # scikit-learn keeps one vector for two classes: softmax([-z/2, z/2]) = its sigmoid(z)
        weight[present] = np.stack([-fitted.coef_[0], fitted.coef_[0]]) / 2
        bias[present] = np.array([-fitted.intercept_[0], fitted.intercept_[0]]) / 2
    else:
        weight[fitted.classes_] = fitted.coef_
        bias[fitted.classes_] = fitted.intercept_
    return BaselineClassifier(*(torch.from_numpy(np.asarray(v, dtype=np.float32)) for v in (mean, scale, weight, bias)),
                              frames=frames)


def top1(model: BaselineClassifier, inputs: np.ndarray, labels: np.ndarray) -> float:
    with torch.no_grad():
        predicted = model(torch.from_numpy(inputs)).argmax(1).numpy()
    return float((predicted == labels).mean())


def fit_baseline(params: Params, dataset_path: Path) -> BaselineFit:
    """The baseline fitted on the training split (finetune.label_fraction's subset when set), C chosen on validation."""
    s = params.finetune
    augment = resolve_frames(params.augment, dataset_path)  # PoseDataset wants a number; the baseline has its own
    subset = subset_key(s.label_fraction) if s.label_fraction is not None else None
    train = PoseDataset(dataset_path, augment, "eval", split="train", subset=subset)
    if len(train) == 0:
        raise SlrpipeError(f"{dataset_path} has no training samples")
    val = PoseDataset(dataset_path, augment, "eval", split="val")
    classes = len(train.glosses)
    train_inputs, train_labels = dataset_features(train)
    if len(val):
        val_inputs, val_labels = dataset_features(val)
        tried = {C: fit_logistic(train_inputs, train_labels, classes, C, s.seed) for C in C_GRID}
        scored = {C: top1(model, val_inputs, val_labels) for C, model in tried.items()}
        C = max(C_GRID, key=lambda c: (scored[c], -c))
        log.info("baseline: validation top-1 by C: %s -> C = %g", ", ".join(f"{c:g}: {v:.3f}" for c, v in scored.items()), C)
        model, val_top1 = tried[C], scored[C]
    else:
        log.info("baseline: no validation split, so C = %g", DEFAULT_C)
        C, val_top1 = DEFAULT_C, None
        model = fit_logistic(train_inputs, train_labels, classes, C, s.seed)
    return BaselineFit(model, C, val_top1, top1(model, train_inputs, train_labels), train.glosses)


def run_baseline_protocol(params: Params, dataset: DatasetParams, dataset_path: Path, out_dir: Path,
                          live_dir: Path | None, best: str, last: str) -> tuple[dict, dict[str, float]]:
    """`finetune.protocol: baseline`: fit and write the model file as best.pt (and last.pt, the
    finetune stage's other output, the same file: there is nothing to resume). Returns how the
    model was chosen (`selected`, as best.pt records it) and the logged metrics."""
    fit = fit_baseline(params, dataset_path)
    with RaggedFile(dataset_path) as dataset_file:
        preprocess = dataset_file.attr("preprocess")
    selected = {"select": "val" if fit.val_top1 is not None else "last", "epoch": 1,
                "metric": "val/top1" if fit.val_top1 is not None else None, "value": fit.val_top1, "C": fit.C}
    # The model file's augment section is what evaluate and predict build their loader from: a number, never auto.
    params = params.model_copy(update={"augment": resolve_frames(params.augment, dataset_path)})
    for name in (best, last):
        save_model(out_dir / name, fit.model, params, dataset, fit.glosses, preprocess, selected)
    live = open_live(live_dir, 0)
    metrics = {"train/top1": fit.train_top1, **({"val/top1": fit.val_top1} if fit.val_top1 is not None else {})}
    log_epoch(live, metrics)
    if live is not None:
        live.end()
    return selected, metrics
