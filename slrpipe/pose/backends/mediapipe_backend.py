"""MediaPipe Holistic as an offline video backend (its models ship inside the 0.10.14 wheel).

Output per frame is the 258-value vector of the common MP_Data recordings (pose 33 x 4,
left hand 21 x 3, right hand 21 x 3, normalized coordinates), so videos and MP_Data files
go through the same mapping to slrpipe's 49 joints.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import numpy as np

from slrpipe.pose import joints
from slrpipe.errors import MissingDependencyError

log = logging.getLogger(__name__)

INSTALL_HINT = "install it with: python -m slrpipe.install_extras mediapipe"

# What MediaPipe's C++ code (TFLite, absl logging) writes to stderr for every video, none of
# it actionable: the XNNPACK notice, absl's "before InitializeLog" banner and the feedback-tensor
# warning once per model. Neither GLOG_minloglevel nor TF_CPP_MIN_LOG_LEVEL reaches these in the
# 0.10.14 wheel (tried), so they are caught on the file descriptor and dropped; any other line
# is passed on to the log.
NATIVE_NOISE = re.compile(
    r"Created TensorFlow Lite XNNPACK delegate"
    r"|All log messages before absl::InitializeLog\(\) is called"
    r"|inference_feedback_manager\.cc:\d+\] Feedback manager requires a model with a single signature"
)
# protobuf 4 warns once per process that MediaPipe's Python code uses a deprecated call.
warnings.filterwarnings("ignore", message=r"SymbolDatabase\.GetPrototype\(\) is deprecated", category=UserWarning)


@contextmanager
def native_stderr_filtered() -> Iterator[None]:
    """Route file descriptor 2 into a temporary file while MediaPipe's native code runs, then log
    every captured line that is not known noise (as a warning: it may be a real problem)."""
    sys.stderr.flush()
    with tempfile.TemporaryFile() as capture:
        saved = os.dup(2)
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            for line in capture.read().decode("utf-8", errors="replace").splitlines():
                if line.strip() and not NATIVE_NOISE.search(line):
                    log.warning("MediaPipe: %s", line)


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
        # One capture for the whole video: the graph's threads also log after `process` returns.
        with native_stderr_filtered(), self._holistic.Holistic(
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
