"""Downstream training (METHOD.md section 7): the finetune, linear, semi-supervised and scratch
protocols."""
