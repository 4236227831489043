"""The report's figures: a t-SNE of the test embeddings (the paper's Fig. 3) and the training curves."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from slrpipe.h5io import atomic_path

TSNE_PNG, CURVES_PNG = "figures/tsne.png", "figures/curves.png"  # in the report's folder
BRANCHES = ("joint", "motion")
LEGEND_CLASSES = 20  # at most this many classes get a colour and a legend entry in the t-SNE
TSNE_MAX_POINTS = 5000  # t-SNE of more test samples runs on a seeded random subset
TSNE_SEED = 0
PRETRAIN_LOSS = "train/loss/"  # the pretrain stage's loss terms, averaged over the training batches
KNN_CURVE = "val/knn_top1"  # the pretrain stage's kNN monitor, on the validation split


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=110, facecolor="white", layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", facecolor="white")


def tsne_perplexity(n: int) -> float:
    """sklearn's default 30, lowered for small test sets: it must stay below the number of points."""
    return float(min(30.0, max(1.0, (n - 1) / 3)))


def tsne_2d(features: np.ndarray) -> np.ndarray:
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits  # a requirement of scikit-learn

    # One OpenMP thread: the same result on every machine, and Barnes-Hut's threads stall (20x
    # slower) on a machine whose cores are busy, e.g. with training.
    with threadpool_limits(limits=1, user_api="openmp"):
        return TSNE(n_components=2, perplexity=tsne_perplexity(len(features)), init="pca", learning_rate="auto",
                    random_state=TSNE_SEED).fit_transform(features)


def plot_tsne(path: Path, embeddings: dict[str, np.ndarray], labels: np.ndarray, names: dict[int, str]) -> str | None:
    """Write the t-SNE figure; returns why it was not drawn, or None."""
    n = len(labels)
    if not embeddings:
        return "the model has no learned embedding (protocol baseline: a logistic regression on the joints)"
    if n < 5:
        return f"only {n} test samples: too few for a t-SNE"
    chosen = np.arange(n)
    if n > TSNE_MAX_POINTS:
        chosen = np.sort(np.random.default_rng(TSNE_SEED).choice(n, TSNE_MAX_POINTS, replace=False))
    labels = labels[chosen]
    unit = {b: x[chosen] / np.maximum(np.linalg.norm(x[chosen], axis=1, keepdims=True), 1e-12) for b, x in embeddings.items()}
    panels = [(f"{b.capitalize()} only", unit[b]) for b in BRANCHES if b in unit]  # and both, concatenated:
    panels += [("Joint + motion (concatenated)", np.concatenate([unit[b] for b in BRANCHES], axis=1))] if len(panels) == 2 else []
    classes, counts = np.unique(labels, return_counts=True)
    coloured = classes[np.lexsort((classes, -counts))][:LEGEND_CLASSES]  # most frequent first, then by label
    from matplotlib import colormaps

    # Categorical colours without the greys (grey is for the classes left out of the legend);
    # past the palette, the colours repeat with another marker.
    palette = ([c for i, c in enumerate(colormaps["tab10"].colors) if i != 7] if len(coloured) <= 9 else
               [c for i, c in enumerate(colormaps["tab20"].colors) if i not in (14, 15)])
    markers = "os^Dv<>pP*"
    figure = _figure(4.6 * len(panels) + 1.8, 5.0)
    handles = {}
    for ax, (title, features) in zip(figure.subplots(1, len(panels), squeeze=False)[0], panels):
        xy = tsne_2d(features)
        others = ~np.isin(labels, coloured)
        if others.any():
            handles["other"] = ax.scatter(xy[others, 0], xy[others, 1], s=8, c="#c8c8c8", linewidths=0,
                                          label=f"other classes ({len(classes) - len(coloured)})")
        for i, label in enumerate(coloured):
            mine = labels == label
            handles[int(label)] = ax.scatter(xy[mine, 0], xy[mine, 1], s=34, color=palette[i % len(palette)],
                                             marker=markers[(i // len(palette)) % len(markers)], edgecolors="white",
                                             linewidths=0.4, label=names.get(int(label), f"class {int(label)}"))
        ax.set_title(title, fontsize=12)
        ax.set(xlabel="t-SNE dimension 1", ylabel="t-SNE dimension 2")
        ax.tick_params(labelbottom=False, labelleft=False, length=0)
        ax.set_axisbelow(True)
        ax.grid(True, color="#eeeeee")
    subset = f"a random {len(chosen)} of {n}" if len(chosen) < n else f"{n}"
    details = f"{subset} samples, {len(classes)} classes; perplexity {tsne_perplexity(len(chosen)):.3g}"
    figure.suptitle(f"t-SNE of test-set embeddings{' ' if len(panels) > 1 else chr(10)}({details})", fontsize=13)
    legend = [handles[int(c)] for c in coloured] + ([handles["other"]] if "other" in handles else [])
    title = "class" if len(coloured) == len(classes) else f"{len(coloured)} most frequent classes"
    figure.legend(handles=legend, loc="outside right center", title=title, fontsize=9, title_fontsize=10,
                  frameon=False, ncol=1 if len(legend) <= 22 else 2)
    _save(figure, path)
    return None


ACCURACY_CURVES = (("train/top1", "train top-1", {"color": "tab:blue"}),
                   ("val/top1", "validation top-1", {"color": "tab:orange"}),
                   ("val/top5", "validation top-5", {"color": "tab:orange", "linestyle": "--"}),
                   ("test/top1", "test top-1 (finetune.select: test)", {"color": "tab:purple"}))


def plot_curves(path: Path, curves: dict[str, dict], missing_why: dict[str, str],
                lr_steps: dict[str, Sequence[int]] | None = None, contrast_chance: float | None = None) -> None:
    """2 x 2 panels: pretraining losses, pretraining kNN accuracy, fine-tuning loss, fine-tuning accuracy;
    dotted lines where the learning rate drops (`lr_steps`: stage -> MultiStepLR milestones), and a
    dashed line at the contrastive terms' chance level (`contrast_chance`: PretrainParams.contrast_chance)."""
    pre, fine, total = curves.get("pretrain", {}), curves.get("finetune", {}), f"{PRETRAIN_LOSS}total"
    losses = [(name, 1, {"label": name.removeprefix(PRETRAIN_LOSS).replace("_", " "), "color": "black" if name == total else None,
                         "linewidth": 2.2 if name == total else 1.2})
              for name in sorted((n for n in pre if n.startswith(PRETRAIN_LOSS)), key=lambda n: n != total)]
    panels = [  # title, y label, stage, curves drawn (name, scale, style), what a missing panel says
        ("Pretraining losses", "loss", "pretrain", losses, "no pretraining loss curves"),
        ("Pretraining: kNN accuracy of the features", "top-1 accuracy (%)", "pretrain",
         [(KNN_CURVE, 100, {"marker": "o", "color": "tab:green", "label": "kNN top-1 (validation)"})] if KNN_CURVE in pre else [],
         "no kNN accuracy curve"),
        ("Fine-tuning loss", "cross-entropy loss", "finetune",
         [("train/loss", 1, {"color": "tab:red", "label": "training loss"})] if "train/loss" in fine else [],
         "no fine-tuning loss curve"),
        ("Fine-tuning accuracy", "accuracy (%)", "finetune",
         [(name, 100, {"label": label, **style}) for name, label, style in ACCURACY_CURVES if name in fine],
         "no fine-tuning accuracy curves"),
    ]
    figure = _figure(12.5, 8.5)
    axes = figure.subplots(2, 2).ravel()
    for i, (ax, (title, ylabel, stage, lines, why)) in enumerate(zip(axes, panels)):
        ax.set_title(title, fontsize=12)
        if not lines:
            ax.text(0.5, 0.5, missing_why.get(stage, why), ha="center", va="center", transform=ax.transAxes, fontsize=11,
                    color="#666666", wrap=True)
            ax.set(xticks=[], yticks=[])
        else:
            for name, scale, style in lines:
                steps, values = curves[stage][name]
                ax.plot(steps + 1, scale * values, **style)  # dvclive's step is the 0-based epoch index
            if i == 0 and contrast_chance is not None and any(name.startswith(f"{PRETRAIN_LOSS}contrast_") for name in pre):
                # A contrastive term at this line has learned nothing: the positive is one key among bank + 1.
                ax.axhline(contrast_chance, color="tab:red", linestyle="--", linewidth=1.2,
                           label=f"contrast at chance ({contrast_chance:.2f})")
            from matplotlib.ticker import MaxNLocator

            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            last = max((float(steps.max()) for steps, _ in curves[stage].values() if len(steps)), default=-1.0)
            for milestone in (lr_steps or {}).get(stage, ()):  # MultiStepLR: from 0-based epoch m on, the lr is lower
                if milestone <= last:
                    ax.axvline(milestone + 0.5, color="#999999", linestyle=":", linewidth=1)
            ax.set(xlabel="epoch", ylabel=ylabel)
            if i == 3:
                ax.set_ylim(-2, 102)
            ax.legend(fontsize=8 if i == 0 else 9, ncol=2 if i == 0 else 1)
        ax.grid(True, color="#eeeeee")
    if losses and KNN_CURVE in pre:  # the same epochs under each other's ticks
        axes[1].set_xlim(axes[0].get_xlim())
    drops = any(line.get_linestyle() == ":" for ax in axes for line in ax.get_lines())
    figure.suptitle("Training curves" + (" (dotted lines: learning-rate drops)" if drops else ""), fontsize=13)
    _save(figure, path)
