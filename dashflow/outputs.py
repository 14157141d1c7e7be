"""Where commands write, checked before any work: one policy for every command.

- An existing output file is replaced, atomically, only once its new content is complete.
- An output that is one of the inputs, or a folder written into its own input folder, is refused.
- Two inputs that would write one output (``take.wav`` and ``take.flac``) are refused.
- The output's folder must exist or be creatable, and be writable; a parent that is a file is refused.
- Audio is written in the format its suffix names (``.wav``, ``.flac``, ``.ogg``); other suffixes are refused.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from dashflow.errors import DashflowError

AUDIO_FORMATS = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG"}


def check_writable(path: str | os.PathLike, folder: bool = False, flag: str = "-o") -> Path:
    """``path`` if it can be created or replaced: a file (or a folder when ``folder``).

    Its nearest existing ancestor must be a writable folder. Raises one-line DashflowError.
    """
    path = Path(path)
    if path.exists():
        if folder and not path.is_dir():
            raise DashflowError(f"{flag} {path}: exists and is not a folder")
        if not folder and path.is_dir():
            raise DashflowError(f"{flag} {path}: is a folder; give a file name")
    ancestor = path if folder and path.is_dir() else path.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise DashflowError(f"{flag} {path}: {ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise DashflowError(f"{flag} {path}: {ancestor} is not writable")
    return path


def audio_format(path: str | os.PathLike) -> str:
    """The soundfile format named by ``path``'s suffix; DashflowError for any other suffix."""
    suffix = Path(path).suffix.lower()
    if suffix not in AUDIO_FORMATS:
        raise DashflowError(f"{path}: cannot write audio with suffix {suffix or '(none)'!r}; "
                            f"use {', '.join(AUDIO_FORMATS)}")
    return AUDIO_FORMATS[suffix]


def check_spares_inputs(outputs: Sequence[Path], inputs: Sequence[Path], flag: str = "-o") -> None:
    """Raise DashflowError when any of ``outputs`` is one of the ``inputs`` files."""
    sources = {Path(source).resolve() for source in inputs}
    for path in outputs:
        if Path(path).resolve() in sources:
            raise DashflowError(f"{flag} {path}: is an input file; choose another name")


def check_audio_output(path: str | os.PathLike, inputs: Sequence[Path] = (), flag: str = "-o") -> Path:
    """An audio output file: a known suffix, writable, and none of ``inputs``."""
    path = check_writable(path, flag=flag)
    audio_format(path)
    check_spares_inputs([path], inputs, flag)
    return path


def plan_audio_jobs(source: str | os.PathLike, output: str | os.PathLike | None, default_suffix: str,
                    flag: str = "-o") -> list[tuple[Path, Path]]:
    """(input, output) pairs of a file-or-folder audio command; nothing is created here.

    A file gives one pair (``output`` defaults to ``<stem><default_suffix>`` beside it). A folder is
    mirrored into ``output`` (default ``<folder><default_suffix without extension>``) as WAV files.
    """
    from dashflow.manifests import list_audio_files

    source = Path(source)
    if not source.exists():
        raise DashflowError(f"{source}: no such file or folder")
    tag = Path(default_suffix).stem  # "_enhanced.wav" -> "_enhanced"
    if source.is_file():
        target = Path(output) if output is not None else source.with_name(f"{source.stem}{default_suffix}")
        return [(source, check_audio_output(target, [source], flag))]
    target = check_writable(output if output is not None else f"{source.as_posix().rstrip('/')}{tag}",
                            folder=True, flag=flag)
    if target.resolve() == source.resolve():
        raise DashflowError(f"{flag} {target}: is the input folder; choose another folder")
    files = list_audio_files(source)
    if not files:
        raise DashflowError(f"{source}: no audio files")
    jobs = [(file, target / file.relative_to(source).with_suffix(".wav")) for file in files]
    seen: dict[Path, Path] = {}
    for file, out in jobs:
        if out in seen:
            raise DashflowError(f"{seen[out]} and {file} would both write {out}; rename one of them")
        seen[out] = file
    check_spares_inputs([out for _, out in jobs], files, flag)
    return jobs


class atomic_path:
    """Context manager yielding a temporary sibling path that replaces ``path`` on success."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __enter__(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        os.close(fd)
        self.tmp = Path(name)
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(self.tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the usual mode
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)
