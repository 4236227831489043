"""Names of sample subsets that several stages share, kept in a leaf module so that each
stage's dvc.yaml deps name this small file rather than the module that defines the subsets."""

from __future__ import annotations

# NMFs-CSL: classes 0-609 are the confusing words, 610-1066 the normal ones (an inference from
# the dataset authors' feeder; see the NMFs-CSL notes in slrpipe/pose/sources/official.py).
NMFS_CSL_CONFUSING_CLASSES = 610


def subset_key(fraction: float) -> str:
    """0.2 -> '20%': the name a semi-supervised label subset is saved under (as the paper writes it)."""
    return f"{round(fraction * 100):d}%"


def nmfs_csl_subset(gloss: str) -> str:
    """The NMFs-CSL test subset, confusing or normal, of a class id (a row's gloss)."""
    return "confusing" if int(gloss) < NMFS_CSL_CONFUSING_CLASSES else "normal"
