"""Reports of skipped samples, shared by the stages: CSV `sample_id,path,problem`."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from slrpipe.errors import SlrpipeError
from slrpipe.h5io import write_text_atomic
from slrpipe.pose.manifest import Problem


def write_report(path: Path, problems: list[Problem]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["sample_id", "path", "problem"])
    writer.writerows((p.sample_id, p.path, p.problem) for p in problems)
    write_text_atomic(path, buffer.getvalue())


def read_report(path: Path) -> list[Problem]:
    with path.open(newline="", encoding="utf-8") as handle:
        return [Problem(r["sample_id"], r["path"], r["problem"]) for r in csv.DictReader(handle)]


def check_bad_fraction(bad: int, total: int, limit: float, setting: str, report: Path) -> None:
    """Fail with one line when more than `limit` of the samples were skipped."""
    fraction = bad / total if total else 0.0
    if fraction > limit:
        raise SlrpipeError(f"{bad} of {total} samples are bad ({fraction:.0%} > {setting} {limit:.0%}); see {report}")
