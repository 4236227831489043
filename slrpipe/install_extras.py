"""Install the optional pose backends: ``python -m slrpipe.install_extras mmpose mediapipe``.

Why not plain ``pip install mmpose``: its requirements pull in ``mmcv`` (a CUDA source build),
``torchvision`` and a torch pin, and PyPI's torchvision is a CUDA build that replaces the CPU
torch. So the OpenMMLab packages are installed with ``--no-deps`` on top of the already
installed torch, after their real pure-Python dependencies; ``mmcv-lite`` stands in for
``mmcv`` (see slrpipe.pose.mmcompat for the compiled ops it lacks). ``xtcocotools`` is compiled
from source because its binary wheels are built against numpy 1.x and do not import under
numpy 2. MediaPipe is installed with ``--no-deps`` too, since its requirements add
``opencv-contrib-python`` (a second cv2 beside opencv-python-headless) and jax.
"""

from __future__ import annotations

import argparse
import importlib.util
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence

PIP = [sys.executable, "-m", "pip", "install"]

RECIPES: dict[str, list[list[str]]] = {
    "mmpose": [
        # Dependencies of mmengine/mmcv/mmdet/mmpose, none of which needs torch.
        # setuptools < 81: mmengine still imports pkg_resources, removed in 81.
        PIP + ["setuptools<81", "cython", "addict", "yapf", "rich", "termcolor", "packaging", "Pillow",
               "pyyaml", "pycocotools", "shapely", "six", "terminaltables", "json-tricks", "munkres",
               "matplotlib", "scipy", "tqdm"],
        PIP + ["--no-deps", "mmengine==0.10.7", "mmcv-lite==2.1.0", "mmdet==3.3.0", "mmpose==1.3.2"],
        # Built here against the installed numpy (needs cython + numpy, hence no build isolation).
        PIP + ["--no-deps", "--no-binary", "xtcocotools", "--no-build-isolation", "xtcocotools==1.14.3"],
    ],
    "mediapipe": [
        PIP + ["absl-py", "attrs", "flatbuffers", "protobuf>=4.25.3,<5", "matplotlib"],
        PIP + ["--no-deps", "mediapipe==0.10.14"],
    ],
}  # fmt: skip

# Run in a fresh interpreter after installing, so nothing cached in this process hides a failure.
CHECKS: dict[str, str] = {
    # Builds a small randomly initialised whole-body model and runs it on one blank frame.
    "mmpose": "import numpy as np; from slrpipe.pose.backends.mmpose_backend import MMPoseEstimator, RTMPOSE_T_WHOLEBODY; "
    "MMPoseEstimator(RTMPOSE_T_WHOLEBODY, None, device='cpu').estimate(np.zeros((1, 64, 64, 3), np.uint8)); "
    "import mmpose.apis, mmdet.apis",
    "mediapipe": "import mediapipe as mp; mp.solutions.holistic.Holistic(static_image_mode=True).close()",
}

# Installed first by the project itself; the recipes above rely on them and must not replace them.
CORE = ("torch", "numpy", "cv2")


def install(extras: Sequence[str], dry_run: bool = False) -> int:
    """Run each extra's pip commands, then its import check; return a process exit code."""
    missing = [name for name in CORE if importlib.util.find_spec(name) is None]
    if missing and not dry_run:
        print(f"install slrpipe's core requirements first (missing: {', '.join(missing)})", file=sys.stderr)
        return 1
    for extra in extras:
        started = time.monotonic()
        check = [sys.executable, "-c", CHECKS[extra]]
        for command in [*RECIPES[extra], check]:
            print("+", shlex.join(command), flush=True)
            if not dry_run and subprocess.run(command, check=False).returncode != 0:
                print(f"installing the {extra} extra failed at: {shlex.join(command)}", file=sys.stderr)
                return 1
        if not dry_run:
            print(f"{extra}: installed and importable ({time.monotonic() - started:.0f} s)", flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m slrpipe.install_extras", description=__doc__.splitlines()[0])
    parser.add_argument("extras", nargs="+", choices=sorted(RECIPES), help="which backends to install")
    parser.add_argument("--dry-run", action="store_true", help="print the pip commands without running them")
    args = parser.parse_args(argv)
    return install(list(dict.fromkeys(args.extras)), dry_run=args.dry_run)


if __name__ == "__main__":
    sys.exit(main())
