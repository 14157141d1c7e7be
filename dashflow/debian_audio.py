"""Audio that every Debian machine can install: package facts, TTS voices, licence-text phrases.

Shared by the offline corpus builders in ``recipes/demo`` (reference/offline_data.md): the
version and licences of an installed package, flite / espeak-ng speech at 16 kHz, and plain
sentences from ``/usr/share/common-licenses`` for the voices to read.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from dashflow.audio import SAMPLE_RATE, load_audio, save_audio

TRANSFORMS = "decoded, mixed to mono, resampled to 16 kHz with soxr VHQ, 16-bit PCM"

# speaker -> (engine, voice); flite's wideband voices and espeak-ng variants (22.05 kHz, resampled)
SPEAKERS = {
    "slt": ("flite", "slt"), "rms": ("flite", "rms"), "awb": ("flite", "awb"),
    "kal16": ("flite", "kal16"), "espeak_m1": ("espeak-ng", "en+m1"),
    "espeak_f2": ("espeak-ng", "en+f2"), "espeak_us_m3": ("espeak-ng", "en-us+m3"),
    "espeak_f4": ("espeak-ng", "en+f4"), "espeak_us_f3": ("espeak-ng", "en-us+f3"),
    "espeak_rp_m4": ("espeak-ng", "en-gb-x-rp+m4"),
}
# engine -> (Debian package holding the voices, licence of the voices)
ENGINES = {"flite": ("libflite1", "BSD-style (CMU / Edinburgh)"),
           "espeak-ng": ("espeak-ng-data", "GPL-3+")}
TEXT_DIR = Path("/usr/share/common-licenses")  # base-files: verbatim copying permitted


def package_version(package: str) -> str:
    result = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], check=False,
                            capture_output=True, text=True)
    return result.stdout.strip() or "not installed"


def package_licences(package: str) -> str:
    """The distinct ``License:`` names in ``/usr/share/doc/<package>/copyright`` ("unknown" if none)."""
    path = Path("/usr/share/doc") / package / "copyright"
    text = path.read_text(errors="ignore") if path.is_file() else ""
    names = dict.fromkeys(m.strip() for m in re.findall(r"^License:[ \t]*(\S.*)$", text, re.MULTILINE))
    return " / ".join(names) or "unknown"


def phrases(text: str) -> list[str]:
    """Sentences (or comma-split halves of long ones) of 6-20 plain words, ending in a period."""
    text = re.sub(r"\s+", " ", re.sub(r"\([^)]*\)|\[[^\]]*\]|<[^>]*>|\"", " ", text))
    found = []
    for sentence in re.split(r"(?<=[.!?;:])\s+", text):
        words = sentence.split()
        while len(words) > 20:
            cuts = [i + 1 for i, w in enumerate(words[:-6]) if w.endswith(",") and i >= 5]
            if not cuts:
                break
            cut = min(cuts, key=lambda i: abs(i - len(words) / 2))
            found.append(words[:cut])
            words = words[cut:]
        found.append(words)
    kept = []
    for words in found:
        phrase = re.sub(r"\s+([,.;:!?])", r"\1", " ".join(words))
        acronyms = [w for w in words if w.isupper() and len(w) > 1]
        if (6 <= len(words) <= 20 and re.fullmatch(r"[A-Z][A-Za-z ,;:'\-]+[.!?;:,]", phrase)
                and (not acronyms or (len(acronyms) == 1 and len(acronyms[0]) <= 4))):
            kept.append(phrase[:-1] + ".")
    return kept


def licence_sentences() -> list[tuple[str, str]]:
    """Distinct (source file, phrase) pairs of TEXT_DIR in a fixed shuffled order."""
    seen, pairs = set(), []
    for path in sorted({p.resolve() for p in TEXT_DIR.iterdir() if p.is_file()}):
        for phrase in phrases(path.read_text(encoding="utf-8", errors="ignore")):
            if phrase.lower() not in seen:
                seen.add(phrase.lower())
                pairs.append((str(path), phrase))
    return [pairs[i] for i in np.random.default_rng(0).permutation(len(pairs))]


def synthesize(engine: str, voice: str, text: str, path: Path) -> float:
    """Speak ``text`` into ``path`` (16 kHz mono); returns its duration in seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.wav"
        command = (["flite", "-voice", voice, "-t", text, "-o", str(raw)] if engine == "flite"
                   else ["espeak-ng", "-v", voice, "-w", str(raw), text])
        subprocess.run(command, check=True, capture_output=True)
        wav = load_audio(raw, SAMPLE_RATE)
    save_audio(path, wav)
    return round(wav.numel() / SAMPLE_RATE, 3)
