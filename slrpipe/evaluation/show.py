"""Render one preprocessed sample, so a person can check its hand crops (`slrpipe show`).

A PNG is a strip of evenly spaced frames, one per column, each with three panels: the trunk
in a frame-shaped panel (with both hand boxes, and the hands mapped back from their crops),
the right-hand crop and the left-hand crop. A .gif animates every frame with the same panels.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.animation import PillowWriter
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from slrpipe.pose import joints
from slrpipe.errors import SlrpipeError
from slrpipe.h5io import RaggedFile

CELL = 2.0  # inches: a hand panel's side, and the width of a trunk panel in a strip
PAD = 0.15  # inches around each panel
TITLE = 0.3  # inches above each panel for its title
HEADER = 0.6  # inches above everything for the figure title
DPI = 120
GIF_FPS = 8  # slow enough to follow the fingers
MARGIN = 0.1  # panels show this much (in units of the frame or crop) outside it, so what falls outside shows

TRUNK_COLOR, LEFT_COLOR, RIGHT_COLOR = "0.25", "tab:blue", "tab:orange"
HANDS = ((joints.LEFT_HAND, LEFT_COLOR), (joints.RIGHT_HAND, RIGHT_COLOR))  # same order as hand_boxes


@dataclass
class Sample:
    sample_id: str
    gloss: str
    signer: str
    split: str
    frame_size: tuple[int, int]  # (width, height) in pixels
    coords: np.ndarray  # (T, 49, 2)
    mask: np.ndarray  # (T, 49)
    hand_boxes: np.ndarray  # (T, 2, 3): left, right (cx, cy, side) in pixels
    frame_index: np.ndarray  # (T,)
    mirrored: bool  # the left hand's x was mirrored by preprocess
    # Trunk coordinates are (pixel - trunk_origin) / trunk_unit (preprocess.trunk_transform).
    trunk_origin: np.ndarray = field(default_factory=lambda: np.zeros(2))
    trunk_unit: np.ndarray | None = None  # None: the frame size (files from before trunk_norm)

    def trunk_in_frame(self, xy: np.ndarray) -> np.ndarray:
        """Trunk coordinates -> [0, 1] of the frame, where the hand boxes are drawn."""
        size = np.asarray(self.frame_size, dtype=np.float64)
        unit = size if self.trunk_unit is None else self.trunk_unit
        return (xy * unit + self.trunk_origin) / size

    @property
    def aspect(self) -> float:
        """Frame height / width."""
        return self.frame_size[1] / self.frame_size[0]

    @property
    def title(self) -> str:
        return f"{self.sample_id}   gloss: {self.gloss}   signer: {self.signer or '-'}   split: {self.split}"


def load_sample(dataset: Path, sample_id: str) -> Sample:
    if not dataset.is_file():
        raise SlrpipeError(f"{dataset} not found: run the preprocess stage first (dvc repro preprocess)")
    with RaggedFile(dataset) as source:
        ids = source.column("sample_id")
        if sample_id not in ids:
            close = difflib.get_close_matches(sample_id, ids, n=5, cutoff=0.5)
            hint = f"close matches: {', '.join(close)}" if close else f"it has {len(ids)} samples, e.g. {', '.join(ids[:3])}"
            raise SlrpipeError(f"no sample {sample_id!r} in {dataset}; {hint}")
        i = ids.index(sample_id)
        return Sample(
            sample_id=sample_id,
            gloss=source.column("gloss")[i],
            signer=source.column("signer")[i],
            split=source.column("split")[i],
            frame_size=tuple(int(v) for v in source.column("frame_size")[i]),
            coords=source.frames("coords", i),
            mask=source.frames("mask", i),
            hand_boxes=source.frames("hand_boxes", i),
            frame_index=source.frames("frame_index", i),
            mirrored=bool((source.attr("preprocess") or {}).get("mirror_left_hand", False)),
            **_trunk_placement(source, i),
        )


def _trunk_placement(source: RaggedFile, i: int) -> dict[str, np.ndarray]:
    try:
        return {"trunk_origin": np.asarray(source.column("trunk_origin")[i], dtype=np.float64),
                "trunk_unit": np.asarray(source.column("trunk_unit")[i], dtype=np.float64)}
    except KeyError:  # written before preprocess.trunk_norm: the trunk is in frame coordinates
        return {}


# ---- drawing one frame's panels --------------------------------------------------------------
def _draw_skeleton(
    ax: Axes, xy: np.ndarray, visible: np.ndarray, edges: tuple[tuple[int, int], ...], color: str, size: float, points: np.ndarray | None = None
) -> None:
    """Edges between two detected joints, and the detected joints (or `points`); masked ones (stored as 0, 0) are left out."""
    pairs = np.asarray([edge for edge in edges if visible[edge[0]] and visible[edge[1]]], dtype=np.int64).reshape(-1, 2)
    ax.add_collection(LineCollection(xy[pairs], colors=color, linewidths=1.2, capstyle="round"))
    points = visible if points is None else points
    ax.scatter(xy[points, 0], xy[points, 1], s=size, color=color, zorder=3, linewidths=0)


def _trunk_color(indices: tuple[int, ...]) -> str:
    """The colour of trunk joints: an arm's hand colour when all are on that arm, else the trunk's."""
    for part, color in ((joints.TRUNK_PARTS[0], LEFT_COLOR), (joints.TRUNK_PARTS[1], RIGHT_COLOR)):
        if set(indices) <= set(part):
            return color
    return TRUNK_COLOR


def _box_corner(box: np.ndarray) -> np.ndarray:
    """(cx, cy, side) -> the box's top-left corner in pixels."""
    return box[:2] - box[2] / 2


def draw_trunk(ax: Axes, sample: Sample, t: int) -> None:
    """Frame coordinates, normalized per axis: x and y run over [0, 1] of a frame-shaped panel."""
    size = np.asarray(sample.frame_size, dtype=np.float64)
    coords, mask = sample.coords[t], sample.mask[t]
    # Each arm in its hand's colour, so a box or hand on the wrong arm (left/right swapped) shows.
    trunk_xy, trunk_mask = sample.trunk_in_frame(coords[joints.TRUNK].astype(np.float64)), mask[joints.TRUNK]
    for color in (TRUNK_COLOR, LEFT_COLOR, RIGHT_COLOR):
        edges = tuple(edge for edge in joints.TRUNK_EDGES if _trunk_color(edge) == color)
        own = np.array([_trunk_color((j,)) == color for j in range(joints.NUM_TRUNK)])
        _draw_skeleton(ax, trunk_xy, trunk_mask, edges, color, 10, points=trunk_mask & own)
    for (hand, color), box in zip(HANDS, sample.hand_boxes[t]):
        if box[2] <= 0:
            continue
        corner = _box_corner(box)
        ax.add_patch(Rectangle(corner / size, box[2] / size[0], box[2] / size[1], fill=False, edgecolor=color, linewidth=1.2))
        # The hand mapped back from its crop into the frame: it must sit on the trunk's wrist.
        xy = coords[hand].astype(np.float64)
        if sample.mirrored and hand == joints.LEFT_HAND:
            xy[:, 0] = 1.0 - xy[:, 0]
        _draw_skeleton(ax, (corner + xy * box[2]) / size, mask[hand], joints.HAND_EDGES, color, 2)
    # The frame's border, with a margin around it: a box or joint outside the frame still shows.
    ax.add_patch(Rectangle((0, 0), 1, 1, fill=False, edgecolor="0.6", linewidth=0.8))
    ax.set_xlim(-MARGIN, 1 + MARGIN)
    ax.set_ylim(1 + MARGIN, -MARGIN)  # image convention: y points down
    ax.set_title(f"frame {int(sample.frame_index[t])}", fontsize=9)


def draw_hand(ax: Axes, sample: Sample, t: int, left: bool) -> None:
    """The hand in its crop: [0, 1] of the crop, drawn as a square with a margin around it."""
    hand, color = HANDS[0] if left else HANDS[1]
    name = ("left hand (mirrored)" if sample.mirrored else "left hand") if left else "right hand"
    ax.add_patch(Rectangle((0, 0), 1, 1, fill=False, edgecolor=color, linewidth=1.0, linestyle="--"))
    has_box = sample.hand_boxes[t, 0 if left else 1, 2] > 0
    visible = sample.mask[t, hand]
    if visible.any():
        _draw_skeleton(ax, sample.coords[t, hand], visible, joints.HAND_EDGES, color, 8)
    else:
        ax.text(0.5, 0.5, "no box" if not has_box else "not detected", ha="center", va="center", color="0.5", fontsize=9)
    ax.set_xlim(-MARGIN, 1 + MARGIN)
    ax.set_ylim(1 + MARGIN, -MARGIN)
    ax.set_title(f"{name}, {int(visible.sum())}/{joints.NUM_HAND}", fontsize=9)


def _style(ax: Axes) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_facecolor("white")


# ---- figures ---------------------------------------------------------------------------------
def _figure(width: float, height: float) -> Figure:
    # An Agg canvas attached directly, not pyplot: no window, and no global backend switch for the caller.
    figure = Figure(figsize=(width, height), dpi=DPI, facecolor="white")
    FigureCanvasAgg(figure)
    return figure


def _axes(figure: Figure, left: float, top: float, width: float, height: float) -> Axes:
    """An axes placed in inches from the figure's top-left corner (exact sizes: the panels keep their shapes)."""
    fig_w, fig_h = figure.get_size_inches()
    ax = figure.add_axes((left / fig_w, 1 - (top + height) / fig_h, width / fig_w, height / fig_h))
    _style(ax)
    return ax


def strip_size(columns: int, aspect: float) -> tuple[float, float]:
    """Inches of a strip of `columns` frames of a frame with height / width `aspect`."""
    width = columns * (CELL + 2 * PAD)
    height = HEADER + (TITLE + CELL * aspect + PAD) + 2 * (TITLE + CELL + PAD)
    return width, height


def render_strip(sample: Sample, out: Path, frames: int) -> None:
    picked = np.unique(np.round(np.linspace(0, len(sample.coords) - 1, min(frames, len(sample.coords)))).astype(np.int64))
    figure = _figure(*strip_size(len(picked), sample.aspect))
    figure.suptitle(sample.title, y=1 - 0.2 / figure.get_size_inches()[1], va="top", fontsize=11)
    heights = (CELL * sample.aspect, CELL, CELL)
    for column, t in enumerate(picked):
        left, top = PAD + column * (CELL + 2 * PAD), HEADER
        panels = []
        for height in heights:
            panels.append(_axes(figure, left, top + TITLE, CELL, height))
            top += TITLE + height + PAD
        draw_trunk(panels[0], sample, t)
        draw_hand(panels[1], sample, t, left=False)
        draw_hand(panels[2], sample, t, left=True)
    figure.savefig(out, format="png", dpi=DPI, facecolor="white")


def gif_size(aspect: float) -> tuple[float, float]:
    """Inches of one GIF frame: trunk, right hand, left hand side by side, all CELL high."""
    return CELL / aspect + 2 * CELL + 6 * PAD, HEADER + TITLE + CELL + PAD


def render_gif(sample: Sample, out: Path) -> None:
    figure = _figure(*gif_size(sample.aspect))
    trunk_width = CELL / sample.aspect
    lefts = (PAD, trunk_width + 3 * PAD, trunk_width + CELL + 5 * PAD)
    widths = (trunk_width, CELL, CELL)
    writer = PillowWriter(fps=GIF_FPS)
    with writer.saving(figure, str(out), dpi=DPI):
        for t in range(len(sample.coords)):
            figure.clear()  # redraw from scratch: simpler than updating every artist, fast enough at T <= max_frames
            figure.suptitle(sample.title, y=1 - 0.2 / figure.get_size_inches()[1], va="top", fontsize=9)
            trunk, right, left = (_axes(figure, x, HEADER + TITLE, w, CELL) for x, w in zip(lefts, widths))
            draw_trunk(trunk, sample, t)
            draw_hand(right, sample, t, left=False)
            draw_hand(left, sample, t, left=True)
            writer.grab_frame(facecolor="white")


def render_sample(dataset: Path, sample_id: str, out: Path, frames: int = 6) -> Path:
    """Draw `sample_id` of a preprocess dataset into `out` (.png: a strip of `frames` frames; .gif: every frame)."""
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in (".png", ".gif"):
        raise SlrpipeError(f"{out}: the picture must be a .png (a strip of frames) or a .gif (every frame)")
    if frames < 1:
        raise SlrpipeError(f"frames must be at least 1, got {frames}")
    sample = load_sample(Path(dataset), sample_id)
    out.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".gif":
        render_gif(sample, out)
    else:
        render_strip(sample, out, frames)
    return out
