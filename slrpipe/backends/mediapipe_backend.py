"""MediaPipe Holistic as an offline video backend (its models ship inside the 0.10.14 wheel).

Output per frame is the 258-value vector of the common MP_Data recordings (pose 33 x 4,
left hand 21 x 3, right hand 21 x 3, normalized coordinates), so videos and MP_Data files
go through the same mapping to slrpipe's 49 joints.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from slrpipe import joints
from slrpipe.errors import MissingDependencyError

INSTALL_HINT = "install it with: python -m slrpipe.install_extras mediapipe"


def _holistic_module():
    try:
        from mediapipe.python.solutions import holistic
    except ImportError as error:
        raise MissingDependencyError(f"extract.backend is mediapipe but MediaPipe cannot be imported ({error}); {INSTALL_HINT}") from None
    return holistic


class MediaPipeEstimator:
    def __init__(self, min_detection_confidence: float = 0.5, min_tracking_confidence: float = 0.5) -> None:
        self._holistic = _holistic_module()
        self.min_detection_confidence = min_detection_confidence
        self.min_tracking_confidence = min_tracking_confidence

    def estimate_video(self, batches: Iterable[np.ndarray]) -> np.ndarray:
        """BGR frame batches of one video -> (T, 258) vectors.

        A fresh tracker per video: Holistic tracks landmarks from frame to frame, and state
        carried over from another clip would place the first hands wrongly.
        """
        vectors = []
        with self._holistic.Holistic(
            static_image_mode=False,
            model_complexity=1,  # the only complexity whose model is inside the wheel
            min_detection_confidence=self.min_detection_confidence,
            min_tracking_confidence=self.min_tracking_confidence,
        ) as tracker:
            for batch in batches:
                for frame in batch:
                    rgb = np.ascontiguousarray(frame[..., ::-1])
                    vectors.append(_frame_vector(tracker.process(rgb)))
        return np.stack(vectors)


def _frame_vector(result) -> np.ndarray:
    vector = np.zeros(joints.MEDIAPIPE_VECTOR_NO_FACE, dtype=np.float32)
    if result.pose_landmarks is not None:
        pose = [(p.x, p.y, p.z, p.visibility) for p in result.pose_landmarks.landmark]
        vector[: joints.MEDIAPIPE_POSE_VALUES] = np.asarray(pose, dtype=np.float32).ravel()
    start = joints.MEDIAPIPE_POSE_VALUES
    for hand in (result.left_hand_landmarks, result.right_hand_landmarks):
        if hand is not None:
            values = [(p.x, p.y, p.z) for p in hand.landmark]
            vector[start : start + joints.MEDIAPIPE_HAND_VALUES] = np.asarray(values, dtype=np.float32).ravel()
        start += joints.MEDIAPIPE_HAND_VALUES
    return vector
