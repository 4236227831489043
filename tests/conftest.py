from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def shared() -> Path:
    if not (SHARED / "data").is_dir():
        pytest.skip(f"the shared fixtures are not at {SHARED}")
    return SHARED / "data"


@pytest.fixture()
def ksl_small(shared: Path, tmp_path: Path) -> Path:
    """Two words x two sessions x two sequences of the real ksl13 recordings."""
    root = tmp_path / "ksl"
    for session in ("MP_Data", "MP_Data1"):
        for word in ("bad", "good"):
            for sequence in ("0", "1"):
                shutil.copytree(shared / "ksl13" / session / word / sequence, root / session / word / sequence)
    return root


def make_params(root: Path, source: str = "mp_data", **extract: object):
    from slrpipe.config import parse_params

    return parse_params({"dataset": {"source": source, "root": str(root)}, "extract": extract}, REPO / "params.yaml")
