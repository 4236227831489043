"""Pose-estimation backends that turn video frames into keypoints."""
