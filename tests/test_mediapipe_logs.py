"""MediaPipe's native log lines: the known noise is dropped, anything else reaches the log."""

import logging
import os
import subprocess
import sys

import pytest

from slrpipe.pose.backends.mediapipe_backend import native_stderr_filtered
from tests.conftest import REPO


def test_known_noise_is_dropped_and_other_native_lines_are_logged(caplog):
    with caplog.at_level(logging.WARNING, logger="slrpipe.pose.backends.mediapipe_backend"):
        with native_stderr_filtered():
            os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n"
                        b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
                        b"W0000 00:00:1796049495.562147    6031 inference_feedback_manager.cc:114] Feedback manager "
                        b"requires a model with a single signature inference. Disabling support for feedback tensors.\n"
                        b"E0000 00:00:1.0 1 calculator_graph.cc:887] something real went wrong\n")
    assert [record.getMessage() for record in caplog.records] == [
        "MediaPipe: E0000 00:00:1.0 1 calculator_graph.cc:887] something real went wrong"]


def test_a_real_clip_leaves_stderr_clean(shared):
    pytest.importorskip("mediapipe", reason="MediaPipe extra not installed (python -m slrpipe.install_extras mediapipe)")
    code = (
        "import sys, cv2, numpy as np\n"
        "from slrpipe.pose.backends.mediapipe_backend import MediaPipeEstimator\n"
        f"capture = cv2.VideoCapture({str(shared / 'videos' / 'SOUP.mp4')!r})\n"
        "frames = [capture.read()[1] for _ in range(5)]\n"
        "vectors = MediaPipeEstimator().estimate_video([np.stack(frames)])\n"
        "print(vectors.shape)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "(5, 258)"
    assert done.stderr == ""
