"""Videos and pose files -> the 49 joints (METHOD.md sections 1-2): dataset sources and manifests,
pose-file importers, video reading, the MMPose / MediaPipe backends, the extract stage."""
