"""The GCN + Transformer sign encoder (METHOD.md section 5)."""

from slrpipe.model.encoder import SignEncoder

__all__ = ["SignEncoder"]
