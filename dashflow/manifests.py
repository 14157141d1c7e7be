"""Manifests and audio-file lists: what every command reads its inputs from, without torch.

A manifest is JSON Lines, one clip a line: ``{"audio_id", "audio": path, "caption"?,
"duration"?, "noisy"?: path, "task"?}``; paths are stored relative to the manifest's folder.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from dashflow.errors import DashflowError, first_line
from dashflow.outputs import atomic_path

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".opus")
REQUIRED_KEYS = ("audio_id", "audio")
PATH_KEYS = ("audio", "noisy")


def list_audio_files(folder: str | os.PathLike) -> list[Path]:
    """Sorted audio files directly under or below ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DashflowError(f"{folder}: not a folder")
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file())


def read_manifest(path: str | os.PathLike) -> list[dict]:
    """Read a JSON-lines manifest; audio paths come back absolute (strings).

    Blank lines are ignored. A line that is not a JSON object, lacks ``audio_id``/``audio``
    or repeats an ``audio_id`` raises DashflowError naming ``file:line``.
    """
    path = Path(path)
    if not path.is_file():
        raise DashflowError(f"{path}: manifest not found")
    root = path.parent.resolve()
    records, seen = [], set()
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DashflowError(f"{where}: not valid JSON ({exc.msg})") from None
            if not isinstance(record, dict):
                raise DashflowError(f"{where}: expected a JSON object, got {type(record).__name__}")
            missing = [key for key in REQUIRED_KEYS if not record.get(key)]
            if missing:
                raise DashflowError(f"{where}: missing required key(s) {', '.join(missing)}")
            record["audio_id"] = str(record["audio_id"])
            if record["audio_id"] in seen:
                raise DashflowError(f"{where}: duplicate audio_id {record['audio_id']!r}")
            seen.add(record["audio_id"])
            for key in PATH_KEYS:
                if record.get(key):
                    record[key] = str(root / record[key])  # an absolute path stays as it is
            records.append(record)
    if not records:
        raise DashflowError(f"{path}: manifest is empty")
    return records


def write_manifest(records: Iterable[dict], path: str | os.PathLike) -> Path:
    """Write ``records`` as JSON lines atomically.

    Audio paths under the manifest's folder are stored relative to it (the corpus can move),
    others absolute.
    """
    path = Path(path)
    root = path.parent.resolve()
    lines = []
    for record in records:
        record = dict(record)
        for key in PATH_KEYS:
            if record.get(key):
                absolute = Path(record[key]).resolve()
                record[key] = (absolute.relative_to(root).as_posix()
                               if absolute.is_relative_to(root) else str(absolute))
        lines.append(json.dumps(record, ensure_ascii=False))
    with atomic_path(path) as tmp:
        tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def read_json(path: Path) -> dict:
    """A JSON object from ``path``, or a one-line DashflowError naming the file."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise DashflowError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DashflowError(f"{path}: not valid JSON ({first_line(exc)})") from None
    if not isinstance(data, dict):
        raise DashflowError(f"{path}: expected a JSON object")
    return data
