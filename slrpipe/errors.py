"""Error types that carry a message meant for the user, not a traceback."""

from __future__ import annotations


class SlrpipeError(Exception):
    """A problem the user can fix; the CLI prints its message as one line and exits 1."""


class ParamsError(SlrpipeError):
    """params.yaml has a wrong key or value."""


class SampleError(SlrpipeError):
    """One input sample cannot be used; it is reported and skipped, the run goes on."""


class RootError(SlrpipeError):
    """A dataset's root is missing or holds nothing the source can read. Sources do not know
    which dataset they read: the message starts at the path, and build_manifest puts the
    params key (`datasets.<name>.root`) in front."""


class MissingDependencyError(SlrpipeError):
    """An optional extra (MMPose, MediaPipe) is not installed."""


def restore_hint(path: object) -> str:
    """How to get a damaged pipeline output back: from the DVC cache, or by making it again
    (`dvc repro` reruns every stage whose outputs changed)."""
    return f"restore it with `dvc checkout --force {path}`, or rerun the stage that writes it (`dvc repro`)"
