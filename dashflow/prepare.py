"""``dashflow prepare``: build a JSON-lines manifest from common corpus layouts.

    dashflow prepare folder DIR [--captions FILE] -o manifest.jsonl
    dashflow prepare audiocaps CSV --audio-dir DIR -o manifest.jsonl
    dashflow prepare wavcaps JSON --audio-dir DIR -o manifest.jsonl
    dashflow prepare musiccaps CSV --audio-dir DIR [--caption-column caption] -o manifest.jsonl
    dashflow prepare voicebank ROOT -o manifest.jsonl

Durations come from ``soundfile.info``; unreadable or missing files are reported one line each
and left out; the manifest is written atomically.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import re
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import soundfile as sf

from dashflow.audio import list_audio_files
from dashflow.data import write_manifest
from dashflow.errors import DashflowError

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- helpers

def caption_from_name(path: str | Path) -> str:
    """"DogBark_02.wav" -> "dog bark": split CamelCase, separators to spaces, drop numbers."""
    words = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", Path(path).stem)
    words = re.sub(r"[_\-.]+|\d+", " ", words)
    return " ".join(words.lower().split())


def read_table(path: str | Path) -> list[dict[str, str]]:
    """Rows of a CSV / TSV (header row) or JSON-lines file, as dicts of strings."""
    path = Path(path)
    if not path.is_file():
        raise DashflowError(f"{path}: file not found")
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() in (".jsonl", ".json"):
        try:
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as exc:
            raise DashflowError(f"{path}: not valid JSON lines ({exc.msg})") from None
        if not all(isinstance(row, dict) for row in rows):
            raise DashflowError(f"{path}: every line must be a JSON object")
        return [{k: "" if v is None else str(v) for k, v in row.items()} for row in rows]
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    return list(csv.DictReader(text.splitlines(), delimiter=delimiter))


def require_columns(rows: list[dict], columns: Iterable[str], source: str | Path) -> None:
    """DashflowError naming ``source`` when the table lacks one of ``columns``."""
    have = set(rows[0]) if rows else set()
    missing = [c for c in columns if c not in have]
    if missing:
        raise DashflowError(f"{source}: missing column(s) {', '.join(missing)} "
                            f"(found: {', '.join(sorted(have)) or 'nothing'})")


class AudioFinder:
    """Find a clip in ``folder`` by any of several base names, with any audio extension."""

    def __init__(self, folder: str | Path):
        self.by_name: dict[str, Path] = {}
        for path in list_audio_files(folder):
            self.by_name.setdefault(path.name, path)
            self.by_name.setdefault(path.stem, path)

    def find(self, *names: str) -> Path | None:
        for name in names:
            if name and name in self.by_name:
                return self.by_name[name]
        return None


def with_durations(records: Iterable[dict]) -> Iterator[dict]:
    """Add ``duration`` (seconds, from ``soundfile.info``); unreadable files reported, dropped."""
    for record in records:
        try:
            info = sf.info(str(record["audio"]))
            if record.get("noisy"):
                sf.info(str(record["noisy"]))
        except Exception as exc:  # soundfile raises several types for missing or corrupt files
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            logger.warning("skipping %s: %s", record["audio_id"], reason)
            continue
        if info.frames == 0:
            logger.warning("skipping %s: %s is empty", record["audio_id"], record["audio"])
            continue
        yield {**record, "duration": round(info.frames / info.samplerate, 3)}


def youtube_names(ytid: str, start: str) -> tuple[str, ...]:
    """File names YouTube-clip downloaders use: id, ``Y<id>``, ``<id>_<start>`` (also ``Y``, ``.0``)."""
    return (ytid, f"Y{ytid}", f"{ytid}_{start}", f"{ytid}_{start}.0", f"Y{ytid}_{start}")


def _missing(what: str, name: str) -> None:
    logger.warning("skipping %s: no audio file found for %s", name, what)


# ----------------------------------------------------------------------------- formats

def records_from_folder(folder: str | Path, captions: str | Path | None = None) -> Iterator[dict]:
    """Every audio file under ``folder``; captions from a name,caption table or the file name.

    The table's ``name`` may be the file name, its stem or its path relative to ``folder``.
    """
    folder = Path(folder)
    table: dict[str, str] = {}
    if captions is not None:
        rows = read_table(captions)
        require_columns(rows, ("name", "caption"), captions)
        table = {row["name"]: row["caption"] for row in rows}
    for path in list_audio_files(folder):
        relative = path.relative_to(folder)
        caption = next((table[k] for k in (relative.as_posix(), path.name, path.stem) if k in table),
                       None)
        if caption is None:
            caption = caption_from_name(path)
        yield {"audio_id": relative.with_suffix("").as_posix(), "audio": path, "caption": caption}


def records_from_audiocaps(csv_path: str | Path, audio_dir: str | Path) -> Iterator[dict]:
    """AudioCaps ``audiocap_id,youtube_id,start_time,caption``; audio named by audiocap_id
    or by :func:`youtube_names`."""
    rows = read_table(csv_path)
    require_columns(rows, ("audiocap_id", "youtube_id", "start_time", "caption"), csv_path)
    finder = AudioFinder(audio_dir)
    for row in rows:
        ytid, start = row["youtube_id"], row["start_time"]
        path = finder.find(row["audiocap_id"], *youtube_names(ytid, start))
        if path is None:
            _missing(f"youtube_id {ytid}", f"audiocap {row['audiocap_id']}")
            continue
        yield {"audio_id": row["audiocap_id"], "audio": path, "caption": row["caption"]}


def records_from_wavcaps(json_path: str | Path, audio_dir: str | Path) -> Iterator[dict]:
    """WavCaps ``{"data": [{"id", "caption", "audio"?, ...}]}``; audio by its ``audio`` path
    (relative to ``audio_dir``), else by ``id`` (with or without extension)."""
    json_path, audio_dir = Path(json_path), Path(audio_dir)
    try:
        entries = json.loads(json_path.read_text(encoding="utf-8"))["data"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DashflowError(f"{json_path}: not a WavCaps JSON with a 'data' list ({exc})") from None
    finder = AudioFinder(audio_dir)
    for number, entry in enumerate(entries):
        if not isinstance(entry, dict) or "id" not in entry or "caption" not in entry:
            raise DashflowError(f"{json_path}: entry {number} lacks 'id' or 'caption'")
        clip_id = str(entry["id"])
        given = audio_dir / str(entry["audio"]) if entry.get("audio") else None
        path = given if given is not None and given.is_file() else finder.find(
            clip_id, Path(clip_id).stem, Path(str(entry.get("audio", ""))).name)
        if path is None:
            _missing(f"id {clip_id}", clip_id)
            continue
        yield {"audio_id": clip_id, "audio": path, "caption": entry["caption"]}


def records_from_musiccaps(csv_path: str | Path, audio_dir: str | Path,
                           caption_column: str = "caption") -> Iterator[dict]:
    """MusicCaps / LP-MusicCaps CSV (``ytid`` + ``caption_column``); audio named by
    :func:`youtube_names` (``start_s``). Duplicate ytids keep the first row."""
    rows = read_table(csv_path)
    require_columns(rows, ("ytid", caption_column), csv_path)
    finder = AudioFinder(audio_dir)
    seen: set[str] = set()
    for row in rows:
        ytid = row["ytid"]
        if ytid in seen:
            continue
        seen.add(ytid)
        path = finder.find(*youtube_names(ytid, row.get("start_s", "")))
        if path is None:
            _missing(f"ytid {ytid}", ytid)
            continue
        yield {"audio_id": ytid, "audio": path, "caption": row[caption_column]}


def records_from_voicebank(root: str | Path) -> Iterator[dict]:
    """VoiceBank-DEMAND: each ``clean_<set>`` folder under ``root`` paired file-by-file with
    ``noisy_<set>``; records ``audio_id`` = ``<set>/<name>``, ``audio`` = clean, ``noisy`` =
    noisy, task speech_enhancement."""
    root = Path(root)
    clean_dirs = sorted(p for p in root.glob("clean_*") if p.is_dir()) if root.is_dir() else []
    if not clean_dirs:
        raise DashflowError(f"{root}: no clean_* folders (expected VoiceBank-DEMAND's "
                            f"clean_trainset_28spk_wav / noisy_trainset_28spk_wav layout)")
    for clean_dir in clean_dirs:
        noisy_dir = root / ("noisy_" + clean_dir.name[len("clean_"):])
        if not noisy_dir.is_dir():
            raise DashflowError(f"{noisy_dir}: missing the noisy folder paired with {clean_dir.name}")
        split = clean_dir.name[len("clean_"):]
        for clean in list_audio_files(clean_dir):
            noisy = noisy_dir / clean.relative_to(clean_dir)
            clip_id = f"{split}/{clean.relative_to(clean_dir).with_suffix('').as_posix()}"
            if not noisy.is_file():
                _missing(f"noisy file in {noisy_dir.name}", clip_id)
                continue
            yield {"audio_id": clip_id, "audio": clean, "noisy": noisy,
                   "task": "speech_enhancement"}


# ----------------------------------------------------------------------------- command

def prepare_manifest(records: Iterable[dict], output: str | Path) -> int:
    """Fill durations, check ids are unique, write ``output`` atomically; returns the count."""
    kept, seen = [], set()
    for record in with_durations(records):
        if record["audio_id"] in seen:
            raise DashflowError(f"duplicate audio_id {record['audio_id']!r} ({record['audio']})")
        seen.add(record["audio_id"])
        kept.append({k: str(v) if isinstance(v, Path) else v for k, v in record.items()})
    if not kept:
        raise DashflowError("no readable audio found: nothing to write")
    write_manifest(kept, output)
    return len(kept)


def _run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    sources = {
        "folder": lambda: records_from_folder(args.folder, args.captions),
        "audiocaps": lambda: records_from_audiocaps(args.csv, args.audio_dir),
        "wavcaps": lambda: records_from_wavcaps(args.json, args.audio_dir),
        "musiccaps": lambda: records_from_musiccaps(args.csv, args.audio_dir, args.caption_column),
        "voicebank": lambda: records_from_voicebank(args.root),
    }
    count = prepare_manifest(sources[args.format](), args.output)
    print(f"wrote {count} clips to {args.output}", file=sys.stderr)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``prepare {folder,audiocaps,wavcaps,musiccaps,voicebank}``."""
    parser = subparsers.add_parser("prepare", help="build a JSON-lines manifest from a corpus",
                                   description="Build a JSON-lines manifest from a folder, AudioCaps, WavCaps, "
                                   "MusicCaps or VoiceBank-DEMAND.")
    formats = parser.add_subparsers(dest="format", required=True, metavar="FORMAT")

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = formats.add_parser(name, help=help_text)
        sub.add_argument("-o", "--output", required=True, help="manifest to write (.jsonl)")
        sub.set_defaults(handler=_run)
        return sub

    sub = add("folder", "every audio file under a folder")
    sub.add_argument("folder")
    sub.add_argument("--captions", help="CSV/TSV/JSONL with name,caption (default: file names)")
    sub = add("audiocaps", "AudioCaps CSV (audiocap_id,youtube_id,start_time,caption)")
    sub.add_argument("csv")
    sub.add_argument("--audio-dir", required=True)
    sub = add("wavcaps", 'WavCaps JSON ({"data": [{"id", "caption", ...}]})')
    sub.add_argument("json")
    sub.add_argument("--audio-dir", required=True)
    sub = add("musiccaps", "MusicCaps / LP-MusicCaps CSV (ytid + caption column)")
    sub.add_argument("csv")
    sub.add_argument("--audio-dir", required=True)
    sub.add_argument("--caption-column", default="caption",
                     help="caption column (LP-MusicCaps: caption_writing, caption_summary, ...)")
    sub = add("voicebank", "VoiceBank-DEMAND clean_*/noisy_* folder pairs")
    sub.add_argument("root")
