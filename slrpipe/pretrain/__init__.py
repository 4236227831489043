"""Dual-branch contrastive pretraining (METHOD.md section 6)."""
