"""Evaluation: scores, metrics and the report of a trained model."""
