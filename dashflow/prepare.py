"""``dashflow prepare``: build a JSON-lines manifest from common corpus layouts.

    dashflow prepare folder DIR [--captions FILE] [--caption TEXT] -o manifest.jsonl
    dashflow prepare audiocaps CSV --audio-dir DIR -o manifest.jsonl
    dashflow prepare wavcaps JSON --audio-dir DIR -o manifest.jsonl
    dashflow prepare musiccaps CSV --audio-dir DIR [--caption-column caption] -o manifest.jsonl
    dashflow prepare voicebank ROOT -o manifest.jsonl
    dashflow prepare dns ROOT -o OUT_DIR          # clean.jsonl + noise.jsonl and/or paired.jsonl
    dashflow prepare split --clean C --noise N [--test-fraction 0.2] [--seed 0] -o OUT_DIR
    dashflow prepare mix --clean C --noise N [--snr -5 20] [--reverb-prob 0] [--seed 0] -o OUT_DIR

Durations come from ``soundfile.info``; missing files are named on one warning line each and
left out; unreadable ones too, and then one ``error:`` line counts them (exit status 2, as for
every many-input command: ``dashflow.outputs``); manifests are written atomically. ``split`` puts
whole speakers and whole noise files on one side; ``mix`` writes a fixed noisy/clean test set
(dashflow.mixing.NoiseMixer).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import re
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import soundfile as sf

from dashflow.errors import DashflowError, first_line, quiet_stderr
from dashflow.manifests import list_audio_files, read_manifest, write_manifest
from dashflow.outputs import check_failures, check_spares_inputs, check_writable, warn_skipped

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


def with_durations(records: Iterable[dict], failures: list[str] | None = None) -> Iterator[dict]:
    """Add ``duration`` (seconds, from ``soundfile.info``); an unreadable or empty file is named on a
    warning line, appended to ``failures`` and dropped."""
    for record in records:
        try:
            with quiet_stderr():
                info = sf.info(str(record["audio"]))
                if record.get("noisy"):
                    sf.info(str(record["noisy"]))
            problem = f"{record['audio']} is empty" if info.frames == 0 else None
        except Exception as exc:  # soundfile raises several types for missing or corrupt files
            problem = f"cannot read audio ({first_line(exc)})"
        if problem is None:
            yield {**record, "duration": round(info.frames / info.samplerate, 3)}
            continue
        warn_skipped(f"{record['audio_id']}: {problem}")
        if failures is not None:
            failures.append(record["audio_id"])


def youtube_names(ytid: str, start: str) -> tuple[str, ...]:
    """File names YouTube-clip downloaders use: id, ``Y<id>``, ``<id>_<start>`` (also ``Y``, ``.0``)."""
    return (ytid, f"Y{ytid}", f"{ytid}_{start}", f"{ytid}_{start}.0", f"Y{ytid}_{start}")


def _missing(what: str, name: str) -> None:
    logger.warning("skipping %s: no audio file found for %s", name, what)


# ----------------------------------------------------------------------------- formats

def records_from_folder(folder: str | Path, captions: str | Path | None = None,
                        caption: str | None = None) -> Iterator[dict]:
    """Every audio file under ``folder``; captions from a name,caption table, else ``caption``
    (one for every file), else the file name.

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
        text = next((table[k] for k in (relative.as_posix(), path.name, path.stem) if k in table), caption)
        yield {"audio_id": relative.with_suffix("").as_posix(), "audio": path,
               "caption": caption_from_name(path) if text is None else text}


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
    noisy, ``speaker`` (``p226_001.wav`` -> ``p226``), task speech_enhancement."""
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
                   "speaker": clean.stem.split("_")[0], "task": "speech_enhancement"}


FILEID = re.compile(r"fileid_(\d+)$")
DNS_LAYOUT = ("clean/ (or clean_fullband/) with noise/ (or noise_fullband/), or noisy/ with clean/ "
              "files named *fileid_<N> (DNS-Challenge layouts)")


def dns_speaker(path: Path) -> str:
    """``book_00000_chp_0009_reader_06709_0.wav`` -> ``reader_06709``; else the folder's name."""
    match = re.search(r"reader_(\d+)", path.stem)
    return f"reader_{match.group(1)}" if match else path.parent.name


def records_from_dns(root: str | Path) -> dict[str, list[dict]]:
    """Manifests a DNS-Challenge-style ``root`` holds, by name.

    ``clean`` (with ``speaker``, see :func:`dns_speaker`) and ``noise`` when it has ``clean/``
    (or ``clean_fullband/``) and ``noise/`` (or ``noise_fullband/``), for on-the-fly mixing;
    ``paired`` when it has ``noisy/`` and ``clean/`` files named ``*fileid_<N>``: the noisy file
    ``..._fileid_<N>`` with its clean twin, ``audio_id`` ``fileid_<N>``.
    """
    root = Path(root)
    if not root.is_dir():
        raise DashflowError(f"{root}: not a folder (expected {DNS_LAYOUT})")
    clean, noise, noisy = (next((root / n for n in names if (root / n).is_dir()), None)
                           for names in (("clean", "clean_fullband"), ("noise", "noise_fullband"),
                                         ("noisy",)))
    found: dict[str, list[dict]] = {}
    if clean and noise:
        found["clean"] = [{"audio_id": path.relative_to(clean).with_suffix("").as_posix(),
                           "audio": path, "speaker": dns_speaker(path)}
                          for path in _audio_in(clean)]
        found["noise"] = [{"audio_id": path.relative_to(noise).with_suffix("").as_posix(),
                           "audio": path} for path in _audio_in(noise)]
    clean_by_id = _by_fileid(clean) if clean and noisy else {}
    if clean_by_id:
        found["paired"] = list(_dns_pairs(clean_by_id, noisy))
    if not found:
        raise DashflowError(f"{root}: expected {DNS_LAYOUT}")
    return found


def _audio_in(folder: Path) -> list[Path]:
    files = list_audio_files(folder)
    if not files:
        raise DashflowError(f"{folder}: no audio files")
    return files


def _by_fileid(folder: Path) -> dict[str, Path]:
    """``{N: path}`` for the files of ``folder`` named ``*fileid_<N>``; a repeated N is an error."""
    found: dict[str, Path] = {}
    for path in list_audio_files(folder):
        match = FILEID.search(path.stem)
        if match and match.group(1) in found:
            raise DashflowError(f"{path}: fileid {match.group(1)} repeats {found[match.group(1)]}")
        if match:
            found[match.group(1)] = path
    return found


def _dns_pairs(clean_by_id: dict[str, Path], noisy: Path) -> Iterator[dict]:
    for path in _audio_in(noisy):
        match = FILEID.search(path.stem)
        if match is None or match.group(1) not in clean_by_id:
            _missing("clean file with its fileid", path.relative_to(noisy).as_posix())
            continue
        yield {"audio_id": f"fileid_{match.group(1)}", "audio": clean_by_id[match.group(1)],
               "noisy": path, "task": "speech_enhancement"}


# ----------------------------------------------------------------------------- SE splits

SPLIT_NAMES = ("train_clean", "test_clean", "train_noise", "test_noise")


def split_disjoint(clean: Sequence[dict], noise: Sequence[dict], test_fraction: float = 0.2,
                   seed: int = 0, test_speakers: Sequence[str] | None = None
                   ) -> dict[str, list[dict]]:
    """Split clean speech by speaker and noise by file into train and test sides.

    Whole speakers go to one side: ``test_speakers``, or else speakers taken in a seeded order
    whenever one brings the test share of clips closer to ``test_fraction`` (at least one on
    each side). ``round(test_fraction * N)`` noise files (1 to N - 1) go to test. Returns the
    record lists named by ``SPLIT_NAMES``, each in its input order.
    """
    if not 0.0 < test_fraction < 1.0:
        raise DashflowError(f"test fraction must lie strictly between 0 and 1, got {test_fraction}")
    lacking = next((r for r in clean if not r.get("speaker")), None)
    if lacking is not None:
        raise DashflowError(f"clean clip {lacking['audio_id']!r} has no 'speaker'; a "
                            f"speaker-disjoint split needs one on every clip")
    counts = Counter(str(r["speaker"]) for r in clean)
    if len(counts) < 2:
        raise DashflowError(f"a speaker-disjoint split needs at least 2 speakers, found "
                            f"{len(counts)} ({', '.join(counts) or 'no clips'})")
    if len(noise) < 2:
        raise DashflowError(f"a noise-disjoint split needs at least 2 noise files, found {len(noise)}")
    if test_speakers:
        chosen = {str(s) for s in test_speakers}
        if chosen - counts.keys():
            raise DashflowError(f"test speaker(s) {', '.join(sorted(chosen - counts.keys()))} "
                                f"have no clean clips")
        if chosen >= counts.keys():
            raise DashflowError("every speaker is a test speaker; leave one for training")
    else:
        chosen, have, goal = set(), 0, test_fraction * len(clean)
        for speaker in np.random.default_rng([seed, 0]).permutation(sorted(counts)).tolist():
            if len(chosen) == len(counts) - 1:
                break
            if not chosen or abs(have + counts[speaker] - goal) < abs(have - goal):
                chosen.add(speaker)
                have += counts[speaker]
    tests = min(len(noise) - 1, max(1, round(test_fraction * len(noise))))
    test_noise = set(np.random.default_rng([seed, 1]).permutation(len(noise))[:tests].tolist())
    return {"train_clean": [r for r in clean if str(r["speaker"]) not in chosen],
            "test_clean": [r for r in clean if str(r["speaker"]) in chosen],
            "train_noise": [r for i, r in enumerate(noise) if i not in test_noise],
            "test_noise": [r for i, r in enumerate(noise) if i in test_noise]}


def split_summary(parts: dict[str, list[dict]], shown: int = 12) -> list[str]:
    """One line per side: clips, speakers (the first ``shown`` named) and noise files."""
    lines = []
    for side in ("train", "test"):
        clips, noise = parts[f"{side}_clean"], parts[f"{side}_noise"]
        speakers = sorted({str(r["speaker"]) for r in clips})
        named = ", ".join(speakers[:shown]) + (", ..." if len(speakers) > shown else "")
        lines.append(f"{side}: {len(clips)} clips of {len(speakers)} speaker(s) ({named}); "
                     f"{len(noise)} noise file(s)")
    return lines

# ----------------------------------------------------------------------------- command

def prepare_manifest(records: Iterable[dict], output: str | Path, failures: list[str] | None = None) -> int:
    """Fill durations, check ids are unique, write ``output`` atomically; returns the count. The ids
    of unreadable files are appended to ``failures``."""
    kept, seen = [], set()
    for record in with_durations(records, failures):
        if record["audio_id"] in seen:
            raise DashflowError(f"duplicate audio_id {record['audio_id']!r} ({record['audio']})")
        seen.add(record["audio_id"])
        kept.append({k: str(v) if isinstance(v, Path) else v for k, v in record.items()})
    if not kept:
        raise DashflowError("no readable audio found: nothing to write")
    write_manifest(kept, output)
    return len(kept)


# the manifests that the folder-output formats write
FOLDER_OUTPUTS = {"dns": ("clean.jsonl", "noise.jsonl", "paired.jsonl"),
                  "split": tuple(f"{name}.jsonl" for name in SPLIT_NAMES), "mix": ("manifest.jsonl",)}


def _run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="warning: %(message)s")
    names = FOLDER_OUTPUTS.get(args.format)
    output = check_writable(args.output, folder=names is not None)
    inputs = [Path(value) for key in ("csv", "json", "captions", "clean", "noise") if (value := getattr(args, key, None))]
    check_spares_inputs([output / name for name in names] if names else [output], inputs)
    commands = {"dns": _run_dns, "split": _run_split, "mix": _run_mix}
    if args.format in commands:
        return commands[args.format](args)
    sources = {
        "folder": lambda: records_from_folder(args.folder, args.captions, args.caption),
        "audiocaps": lambda: records_from_audiocaps(args.csv, args.audio_dir),
        "wavcaps": lambda: records_from_wavcaps(args.json, args.audio_dir),
        "musiccaps": lambda: records_from_musiccaps(args.csv, args.audio_dir, args.caption_column),
        "voicebank": lambda: records_from_voicebank(args.root),
    }
    failures: list[str] = []
    count = prepare_manifest(sources[args.format](), args.output, failures)
    check_failures(len(failures), count + len(failures), args.output)
    print(f"wrote {count} clips to {args.output}", file=sys.stderr)
    return 0


def _run_dns(args: argparse.Namespace) -> int:
    failures: list[str] = []
    count = 0
    for name, records in records_from_dns(args.root).items():
        path = Path(args.output) / f"{name}.jsonl"
        written = prepare_manifest(records, path, failures)
        count += written
        print(f"wrote {written} clips to {path}", file=sys.stderr)
    check_failures(len(failures), count + len(failures), args.output)
    return 0


def _run_split(args: argparse.Namespace) -> int:
    speakers = [s for s in args.test_speakers.split(",") if s] if args.test_speakers else None
    parts = split_disjoint(read_manifest(args.clean), read_manifest(args.noise),
                           args.test_fraction, args.seed, speakers)
    for line in split_summary(parts):
        print(line, file=sys.stderr)
    for name in SPLIT_NAMES:
        write_manifest(parts[name], Path(args.output) / f"{name}.jsonl")
    print(f"wrote {', '.join(f'{n}.jsonl' for n in SPLIT_NAMES)} to {args.output}", file=sys.stderr)
    return 0


def _run_mix(args: argparse.Namespace) -> int:
    from dashflow.mixing import MixingConfig, write_mixed_set

    mixing = MixingConfig(snr_db=list(args.snr), reverb_prob=args.reverb_prob, rt60=list(args.rt60))
    path = write_mixed_set(read_manifest(args.clean), read_manifest(args.noise), args.output,
                           mixing, args.seed)
    print(f"wrote {len(read_manifest(path))} noisy/clean pairs to {path}", file=sys.stderr)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``prepare {folder,audiocaps,wavcaps,musiccaps,voicebank,dns,split,mix}``."""
    parser = subparsers.add_parser("prepare", help="build JSON-lines manifests from a corpus",
                                   description="Build JSON-lines manifests from a folder, AudioCaps, "
                                   "WavCaps, MusicCaps, VoiceBank-DEMAND or DNS-Challenge; split and "
                                   "mix speech-enhancement sets.")
    formats = parser.add_subparsers(dest="format", required=True, metavar="FORMAT")

    def add(name: str, help_text: str, output: str = "manifest to write (.jsonl)"
            ) -> argparse.ArgumentParser:
        sub = formats.add_parser(name, help=help_text)
        sub.add_argument("-o", "--output", required=True, help=output)
        sub.set_defaults(handler=_run)
        return sub

    sub = add("folder", "every audio file under a folder")
    sub.add_argument("folder")
    sub.add_argument("--captions", help="CSV/TSV/JSONL with name,caption (default: file names)")
    sub.add_argument("--caption", help="one caption for every file the --captions table does not name")
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
    sub = add("dns", "DNS-Challenge folders -> clean.jsonl + noise.jsonl and/or paired.jsonl",
              "folder for the manifests")
    sub.add_argument("root")
    sub = add("split", "speaker- and noise-disjoint train/test split of SE manifests",
              "folder for train_clean/test_clean/train_noise/test_noise.jsonl")
    sub.add_argument("--clean", required=True, help="clean-speech manifest with 'speaker'")
    sub.add_argument("--noise", required=True, help="noise manifest")
    sub.add_argument("--test-fraction", type=float, default=0.2)
    sub.add_argument("--seed", type=int, default=0)
    sub.add_argument("--test-speakers", help="comma-separated speakers for test (default: drawn)")
    sub = add("mix", "a fixed noisy/clean test set mixed from clean and noise manifests",
              "folder for noisy/, clean/ and manifest.jsonl")
    sub.add_argument("--clean", required=True, help="clean-speech manifest")
    sub.add_argument("--noise", required=True, help="noise manifest")
    sub.add_argument("--snr", type=float, nargs=2, default=[-5.0, 20.0], metavar=("LOW", "HIGH"),
                     help="uniform SNR range in dB (default: -5 20)")
    sub.add_argument("--reverb-prob", type=float, default=0.0,
                     help="probability of simulated reverberation (the target stays dry)")
    sub.add_argument("--rt60", type=float, nargs=2, default=[0.2, 0.8], metavar=("LOW", "HIGH"),
                     help="uniform RT60 range in seconds (default: 0.2 0.8)")
    sub.add_argument("--seed", type=int, default=0)
