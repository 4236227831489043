"""The GCN + Transformer sign encoder (METHOD.md section 5)."""

from slrpipe.model.encoder import SignEncoder, branches_of, initialise, part_of, parts_of

__all__ = ["SignEncoder", "branches_of", "initialise", "part_of", "parts_of"]
