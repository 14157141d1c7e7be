"""Where commands write, checked before any work: one policy for every command.

- An existing output file is replaced, atomically, only once its new content is complete.
- An output that is one of the inputs, or a folder written into its own input folder, is refused.
- Two inputs that would write one output (``take.wav`` and ``take.flac``) are refused.
- The output's folder must exist or be creatable, and be writable; a parent that is a file is refused.
- Audio is written in the format its suffix names (``.wav``, ``.flac``, ``.ogg``); other suffixes are refused.
- A command over many inputs writes the good ones, names each bad one on a ``warning:`` line, then
  ends with one ``error:`` line counting the failures (exit status 2): :func:`run_each`,
  :func:`warn_skipped`, :func:`check_failures`.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable, Sequence
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
        self.tmp = Path(name)
        os.close(fd)
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                umask = os.umask(0)
                os.umask(umask)
                os.chmod(self.tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the usual mode
                os.replace(self.tmp, self.path)
        finally:  # also when the rename itself fails or a signal interrupts it
            self.tmp.unlink(missing_ok=True)


def warn_skipped(message: str) -> None:
    """One ``warning: skipped <message>`` line on stderr (print it after any progress bar closes)."""
    print(f"warning: skipped {message}", file=sys.stderr)


def check_failures(failed: int, total: int, where: str | os.PathLike | None) -> None:
    """A many-input command's closing line: DashflowError when ``failed`` of ``total`` inputs failed
    (each already named on a warning line); ``where`` says where the other results are."""
    if failed:
        rest = f"; the other {total - failed} are in {where}" if failed < total and where else ""
        raise DashflowError(f"{failed} of {total} files failed (see warnings above){rest}")


def run_each(jobs: Sequence[tuple[Path, Path]], work: Callable[[Path, Path], object], desc: str,
             progress: bool = True) -> None:
    """Call ``work(source, target)`` for every job of a folder command under a progress bar; a
    DashflowError skips that job and becomes one warning line after the bar; then :func:`check_failures`."""
    from tqdm.auto import tqdm

    failed: dict[Path, str] = {}
    with tqdm(jobs, delay=1.0, desc=desc, unit="file", disable=not progress) as bar:
        for source, target in bar:
            try:
                work(source, target)
            except DashflowError as exc:
                failed[target] = str(exc)
                bar.set_postfix(failed=len(failed), refresh=False)
    for message in failed.values():  # not through tqdm.write: it draws a bar still in its delay, unended
        warn_skipped(message)
    written = [target.parent for _, target in jobs if target not in failed]
    check_failures(len(failed), len(jobs), os.path.commonpath(written) if written else None)
