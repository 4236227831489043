"""dvclive logging of a training run: one step per epoch, resumed at the epoch a checkpoint holds."""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path

from slrpipe.h5io import write_text_atomic

log = logging.getLogger(__name__)


def open_live(live_dir: Path | None, first_epoch: int):
    """dvclive logger (None when not logging). A run resumed after `first_epoch` epochs goes on
    with the same curves at step `first_epoch`."""
    if live_dir is None:
        return None
    from dvclive import Live

    summary = live_dir / "metrics.json"
    if first_epoch > 0 and summary.is_file() and not _is_json(summary):
        # dvclive rewrites it in place: a run killed at that moment leaves it cut short, and
        # dvclive cannot resume from it. The next step writes it again in full.
        log.warning("%s is damaged (the run was killed while writing it): starting it again", summary)
        summary.unlink()
    live = Live(dir=str(live_dir), resume=first_epoch > 0, save_dvc_exp=False, dvcyaml=None)
    if first_epoch > 0:
        # dvclive's own resume step is the saved one + 1, except after step 0, which it cannot
        # tell from a fresh start: it would log step 0 twice. The checkpoint says where we are.
        _drop_steps_from(Path(live.plots_dir) / "metrics", first_epoch)
        live.step = first_epoch
    return live


def _is_json(path: Path) -> bool:
    try:
        json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return False
    return True


def _drop_steps_from(metrics_dir: Path, first: int) -> None:
    """Remove the curve rows of steps >= first: a run killed after logging an epoch but before its
    checkpoint was written logs that epoch again when resumed."""
    for path in metrics_dir.rglob("*.tsv"):
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle, delimiter="\t")
            rows = list(reader)
        kept = [row for row in rows if int(row["step"]) < first]
        if len(kept) < len(rows):
            text = io.StringIO()
            writer = csv.DictWriter(text, reader.fieldnames or [], delimiter="\t", lineterminator="\n")
            writer.writeheader()
            writer.writerows(kept)
            write_text_atomic(path, text.getvalue())


def log_epoch(live, metrics: dict[str, float]) -> None:
    """Log an epoch's metrics as one step; call it before the epoch's checkpoint is saved."""
    if live is None:
        return
    for name, value in metrics.items():
        live.log_metric(name, value)
    live.next_step()
