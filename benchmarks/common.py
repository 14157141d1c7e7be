"""Helpers shared by the benchmark scripts."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def git_commit() -> str | None:
    """Short hash of the checkout the benchmark ran on (None outside git)."""
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def record(path: Path, values: dict) -> None:
    """Print ``values`` (+ commit and UTC time) as one JSON line and append it to ``path``."""
    import json
    from datetime import datetime, timezone

    line = json.dumps({**values, "commit": git_commit(),
                       "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    print(line, flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        handle.write(line + "\n")


def write_report(out: Path, results: dict, markdown: str) -> None:
    """``results.json`` and ``report.md`` (printed too) into ``out``."""
    import json

    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "report.md").write_text(markdown)
    print(markdown)
