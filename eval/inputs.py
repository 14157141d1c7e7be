"""What `dashflow eval` reads: audio folders paired by basename, captions, and generation sidecars.

A clip's id is its file name without extension. Sidecars are ``<name>.json`` files next to the
generated audio (written by ``generate``) holding settings such as steps, cfg, seed, checkpoint.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import soundfile as sf

from dashflow.errors import DashflowError, quiet_stderr
from dashflow.manifests import list_audio_files

RUN_KEYS = ("steps", "cfg", "seed", "checkpoint", "train_step")
_ID_KEYS = ("audio_id", "id", "name")
_CAPTION_KEYS = ("caption", "text", "prompt")
# "checkpoint-5000", "step_5000", "ckpt5000": the training step a checkpoint path names
_STEP_IN_NAME = re.compile(r"(?:step|checkpoint|ckpt|iter)[-_=]?(\d+)", re.IGNORECASE)


@dataclass
class ClipFolder:
    """Audio files of one folder keyed by clip id (file stem), in sorted order."""

    root: Path
    clips: dict[str, Path]


@dataclass
class Pairing:
    paired: list[str]
    only_generated: list[str] = field(default_factory=list)
    only_reference: list[str] = field(default_factory=list)


def scan_folder(folder: str | os.PathLike) -> ClipFolder:
    """Audio files under ``folder`` by stem; two files with one stem make pairing ambiguous."""
    root = Path(folder)
    files = list_audio_files(root)
    if not files:
        raise DashflowError(f"{root}: no audio files")
    clips: dict[str, Path] = {}
    for path in files:
        if path.stem in clips:
            raise DashflowError(f"{root}: {clips[path.stem].relative_to(root)} and {path.relative_to(root)} "
                                "have the same basename; clips are paired by basename")
        clips[path.stem] = path
    return ClipFolder(root, clips)


def pair(generated: ClipFolder, reference: ClipFolder) -> Pairing:
    """Clip ids present in both folders, and those present in only one."""
    gen, ref = set(generated.clips), set(reference.clips)
    return Pairing(sorted(gen & ref), sorted(gen - ref), sorted(ref - gen))


def audio_summary(folder: ClipFolder) -> dict[str, Any]:
    """Clip lengths and native sample rates of a folder, from the file headers."""
    seconds, rates = [], set()
    for path in folder.clips.values():
        try:
            with quiet_stderr():  # decoders' notes; unreadable files are reported where they are decoded
                info = sf.info(str(path))
        except Exception:
            continue
        if info.samplerate > 0 and info.frames > 0:
            seconds.append(info.frames / info.samplerate)
            rates.add(info.samplerate)
    if not seconds:
        return {}
    return {"seconds_min": round(min(seconds), 3), "seconds_mean": round(sum(seconds) / len(seconds), 3),
            "seconds_max": round(max(seconds), 3), "sample_rates": sorted(rates)}


def read_captions(path: str | os.PathLike) -> dict[str, str]:
    """JSON Lines ``{"audio_id"|"id"|"audio": ..., "caption"|"text"|"prompt": ...}`` -> id: caption.

    ``audio`` (a path) contributes its stem as the id. A repeated id keeps the last caption, as
    the reference implementation does.
    """
    path = Path(path)
    if not path.is_file():
        raise DashflowError(f"{path}: captions file not found")
    captions: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DashflowError(f"{path}:{number}: not JSON ({exc.msg})") from None
        clip_id = _first(record, _ID_KEYS)
        if clip_id is None and isinstance(record, dict) and record.get("audio"):
            clip_id = Path(str(record["audio"])).stem
        caption = _first(record, _CAPTION_KEYS)
        if clip_id is None or caption is None:
            raise DashflowError(f"{path}:{number}: needs an id (audio_id, id or audio) and a caption")
        captions[str(clip_id)] = str(caption)
    if not captions:
        raise DashflowError(f"{path}: no captions")
    return captions


def read_sidecars(folder: ClipFolder) -> dict[str, dict[str, Any]]:
    """``<name>.json`` next to each clip (when present), parsed."""
    sidecars = {}
    for clip_id, audio in folder.clips.items():
        path = audio.with_suffix(".json")
        if not path.is_file():
            continue
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DashflowError(f"{path}: bad sidecar JSON ({exc})") from None
        if not isinstance(record, dict):
            raise DashflowError(f"{path}: a sidecar must hold a JSON object")
        sidecars[clip_id] = record
    return sidecars


def sidecar_captions(sidecars: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Prompts recorded by ``generate`` (used when no captions file is given)."""
    return {cid: str(c) for cid, rec in sidecars.items() if (c := _first(rec, _CAPTION_KEYS)) is not None}


def run_settings(sidecars: dict[str, dict[str, Any]], flags: dict[str, Any]) -> dict[str, Any]:
    """Steps, CFG, seed, checkpoint and training step of a run, from sidecars or flags.

    A value shared by all sidecars is reported as is; differing values as ``{"per_clip": [...]}``.
    A flag fills in a key the sidecars lack and must agree with them where they have it.
    """
    settings: dict[str, Any] = {}
    for key in RUN_KEYS:
        values = sorted({json.dumps(rec[key], sort_keys=True) for rec in sidecars.values() if key in rec})
        flag = flags.get(key)
        if values and flag is not None and values != [json.dumps(flag, sort_keys=True)]:
            raise DashflowError(f"--{key.replace('_', '-')} {flag} contradicts the sidecars "
                                f"({key} = {', '.join(values[:3])})")
        if len(values) == 1:
            settings[key] = json.loads(values[0])
        elif values:
            settings[key] = {"per_clip": sorted((json.loads(v) for v in values), key=_order)}
        elif flag is not None:
            settings[key] = flag
    if "train_step" not in settings and isinstance(settings.get("checkpoint"), str):
        steps = _STEP_IN_NAME.findall(settings["checkpoint"])
        if steps:
            settings["train_step"] = int(steps[-1])
    return settings


def _order(value: Any) -> tuple:
    """Numbers first in numeric order, then everything else by its text."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return (0, value, "") if number else (1, 0, str(value))


def _first(record: Any, keys: tuple[str, ...]) -> Any:
    if not isinstance(record, dict):
        return None
    return next((record[k] for k in keys if record.get(k) not in (None, "")), None)
