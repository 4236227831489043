"""The classifier of the downstream protocols (METHOD.md section 7): per branch, the sign encoder
of the chosen parts, the sum of the parts' features and one linear layer; the branches' logits
are combined. Also the deployable model file (`save_model` / `load_model`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import Dataset

from slrpipe.config import DatasetParams, FinetuneParams, ModelSize, Params
from slrpipe.data.augment import mask_of
from slrpipe.engine.checkpoints import load_checkpoint, save_checkpoint
from slrpipe.engine.loop import run_eval, to_device
from slrpipe.errors import SlrpipeError
from slrpipe.model.baseline import BASELINE_FORMAT, BaselineClassifier, baseline_state, load_baseline, score_baseline
from slrpipe.model.encoder import SignEncoder, branches_of, initialise, part_of, parts_of

MODEL_FORMAT = "slrpipe.classifier/1"


class SignClassifier(nn.Module):
    """Per branch: encoder of the chosen parts -> f (their sum) -> linear classifier; logits combined."""

    def __init__(self, size: ModelSize, classes: int, branches: tuple[str, ...], parts: tuple[str, ...], combine: str) -> None:
        super().__init__()
        self.branches, self.parts, self.combine = branches, parts, combine
        self.encoders = nn.ModuleDict({m: SignEncoder(size, parts) for m in branches})
        self.classifiers = nn.ModuleDict({m: nn.Linear(size.width, classes) for m in branches})
        initialise(self.classifiers, size.form.init)

    def features(self, view: dict) -> dict[str, torch.Tensor]:
        return {m: sum(self.encoders[m](view[m], mask_of(view, m)).values()) for m in self.branches}

    def classify(self, view: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Combined logits and each branch's sequence feature."""
        features = self.features(view)
        logits = torch.stack([self.classifiers[m](f) for m, f in features.items()]).sum(0)
        return (logits / len(features) if self.combine == "mean" else logits), features

    def forward(self, view: dict) -> torch.Tensor:
        return self.classify(view)[0]

    def load_pretrained(self, state: dict, source: Path) -> None:
        """Copy the pretrain checkpoint's query encoders (key encoders and heads are dropped), only
        the parts this model uses: a hand-only model takes the hand weights of a two-part checkpoint."""
        for m in self.branches:
            prefix = f"query.{m}.encoder."
            weights = {k[len(prefix):]: v for k, v in state["model"].items() if k.startswith(prefix)}
            if not weights:
                raise SlrpipeError(f"{source} has no {m} encoder: pretrain with branches both or {m}")
            missing = [part for part in self.parts if not any(part_of(key) == part for key in weights)]
            if missing:
                raise SlrpipeError(f"{source}: its {m} encoder has no {missing[0]} part: pretrain with parts both or "
                                   f"{missing[0]}, or fine-tune with parts {'/'.join(sorted({part_of(k) for k in weights}))}")
            try:
                self.encoders[m].load_state_dict({k: v for k, v in weights.items() if part_of(k) in self.parts})
            except RuntimeError as error:
                raise SlrpipeError(f"{source}: its {m} encoder does not fit model.size ({str(error).splitlines()[0]})") from None


def score_dataset(model: SignClassifier | BaselineClassifier, dataset: Dataset, device: torch.device,
                  batch_size: int) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Softmax scores (N, C), labels (N,) and each branch's sequence features (N, W) of every
    sample in dataset order, in eval mode (validation during training and the evaluate stage).
    The baseline has no branches, so no features."""
    if isinstance(model, BaselineClassifier):
        return (*score_baseline(model, dataset), {})
    def forward(batch: dict) -> dict[str, torch.Tensor]:
        logits, features = model.classify(to_device(batch["view"], device))
        return {"scores": F.softmax(logits.float(), dim=1), "labels": batch["label"],
                **{f"features/{branch}": value for branch, value in features.items()}}

    out = run_eval(model, dataset, batch_size, forward)
    return (out["scores"].numpy(), out["labels"].long().numpy(),
            {name.split("/", 1)[1]: value.numpy() for name, value in out.items() if name.startswith("features/")})


def build_classifier(size: ModelSize, classes: int, settings: FinetuneParams) -> SignClassifier:
    return SignClassifier(size, classes, branches_of(settings.branches), parts_of(settings.parts), settings.combine)


def save_model(path: Path, model: SignClassifier | BaselineClassifier, params: Params, dataset: DatasetParams,
               glosses: list[str], preprocess: dict, selected: dict) -> None:
    """The deployable model file: weights plus everything needed to prepare new inputs the same way
    (`dataset`: the one it was trained on, whose frame size and rate pose-file inputs default to)."""
    baseline = baseline_state(model) if isinstance(model, BaselineClassifier) else {}
    save_checkpoint({
        "format": MODEL_FORMAT,
        "model": model.state_dict(),
        "model_size": params.model.chosen.model_dump(mode="json"),
        "finetune": params.finetune.model_dump(mode="json"),
        "glosses": list(glosses),
        "preprocess": preprocess,
        "augment": params.augment.model_dump(mode="json"),
        "dataset": {"frame_size": list(dataset.frame_size), "fps": dataset.fps},
        "epoch": selected["epoch"],
        "selected": selected,  # how this epoch was chosen (finetune.select)
        **({"format": BASELINE_FORMAT, **baseline} if baseline else {}),
    }, path)


def load_model(path: Path) -> tuple[SignClassifier | BaselineClassifier, dict]:
    """A model file written by `save_model` -> (classifier in eval mode, the file's metadata)."""
    state = load_checkpoint(path)
    if state.get("format") == BASELINE_FORMAT:
        return load_baseline(state, str(path)), state
    if state.get("format") != MODEL_FORMAT:
        raise SlrpipeError(f"{path} is not a slrpipe model file (run the finetune stage to make one)")
    settings = FinetuneParams.model_validate(state["finetune"])
    model = build_classifier(ModelSize.model_validate(state["model_size"]), len(state["glosses"]), settings)
    own = model.state_dict()
    # Model files from before encoders were built with only their parts also hold the unused part's weights.
    model.load_state_dict({k: v for k, v in state["model"].items() if k in own or not k.startswith("encoders.")})
    model.eval()
    return model, state
