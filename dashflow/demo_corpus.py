"""Pieces of the offline demo corpora (``recipes/demo``): Debian packages, TTS and MIDI renders.

Debian facts (the version and licences of an installed package), flite / espeak-ng speech at
16 kHz reading plain sentences from ``/usr/share/common-licenses``, clips of natural event length
made from short recordings (events joined with gaps, augmented) or cropped from a longer one,
deterministic splits by source recording (held-out vs train, or train / val / test), and
synthetic training noises (coloured noise, mains hum, babble) for the speech-enhancement corpus.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import scipy.signal

from dashflow.audio import SAMPLE_RATE, load_audio, resample, save_audio
from dashflow.errors import DashflowError
from dashflow.mixing import synthetic_rir

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


def synthesize(engine: str, voice: str, text: str, path: Path, rate: float = 1.0,
               pitch_hz: float | None = None) -> float:
    """Speak ``text`` into ``path`` (16 kHz mono) at ``rate`` times the voice's own speed and, for
    flite, a mean pitch of ``pitch_hz`` (None: the voice's own); returns its duration in seconds."""
    if pitch_hz is not None and engine != "flite":
        raise DashflowError(f"a pitch is set through flite only, not {engine} (pick an espeak-ng variant instead)")
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.wav"
        if engine == "flite":
            speed = [] if rate == 1.0 else ["--setf", f"duration_stretch={1 / rate:.4f}"]
            pitch = [] if pitch_hz is None else ["--setf", f"int_f0_target_mean={pitch_hz:g}"]
            command = ["flite", "-voice", voice, *speed, *pitch, "-t", text, "-o", str(raw)]
        else:
            speed = [] if rate == 1.0 else ["-s", str(round(175 * rate))]  # espeak-ng's default: 175 wpm
            command = ["espeak-ng", "-v", voice, *speed, "-w", str(raw), text]
        subprocess.run(command, check=True, capture_output=True)
        wav = load_audio(raw, SAMPLE_RATE)
    save_audio(path, wav)
    return round(wav.numel() / SAMPLE_RATE, 3)


def trim(wav: np.ndarray, floor_db: float = -45.0) -> np.ndarray:
    """Cut leading and trailing parts quieter than ``floor_db`` below the peak."""
    peak = float(np.abs(wav).max()) if wav.size else 0.0
    loud = np.flatnonzero(np.abs(wav) > peak * 10 ** (floor_db / 20))
    return wav[loud[0]:loud[-1] + 1] if loud.size else wav[:0]


def split_by_source(sources: Sequence[tuple[str, str]], fraction: float = 0.3, minimum: int = 3) -> set[str]:
    """Held-out source ids from (label, source id) pairs: per label, the ``fraction`` (at least
    ``minimum``) of its sources with the smallest sha1 of the id. Deterministic, independent of
    order, and a source is never on both sides."""
    chosen = set()
    for label in dict.fromkeys(label for label, _ in sources):
        ids = sorted({s for lab, s in sources if lab == label}, key=lambda s: hashlib.sha1(s.encode()).hexdigest())
        chosen.update(ids[:max(minimum, round(fraction * len(ids)))])
    return chosen


def split_three_ways(sources: Sequence[tuple[str, str]], seed: int = 0, val: float = 0.2,
                     test: float = 0.3) -> dict[str, str]:
    """Source id -> "train" / "val" / "test" from (label, source id) pairs: per label, ``test`` and
    ``val`` fractions of its sources (at least one each, at least one left for train), ranked by
    the sha1 of ``seed`` and id. Deterministic given ``seed`` and independent of order; a label
    with fewer than 3 sources, or a source under two labels, raises DashflowError."""
    owner: dict[str, str] = {}
    for label, source in sources:
        if owner.setdefault(source, label) != label:
            raise DashflowError(f"source {source!r} is under two labels ({owner[source]!r}, {label!r})")
    splits = {}
    for label in dict.fromkeys(owner.values()):
        ids = sorted((s for s, lab in owner.items() if lab == label),
                     key=lambda s: hashlib.sha1(f"{seed}:{s}".encode()).hexdigest())
        if len(ids) < 3:
            raise DashflowError(f"label {label!r} has {len(ids)} source(s); a train/val/test split needs 3")
        n_test = max(1, round(test * len(ids)))
        n_val = min(max(1, round(val * len(ids))), len(ids) - n_test - 1)
        n_test = min(n_test, len(ids) - n_val - 1)
        for rank, source in enumerate(ids):
            splits[source] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    return splits


def loud_crop(wav: np.ndarray, rng: np.random.Generator, seconds: tuple[float, float] = (1.0, 3.0),
              tries: int = 8) -> np.ndarray:
    """A crop [S] of 16 kHz ``wav`` [S] lasting ``seconds`` (drawn uniformly; a shorter ``wav`` is
    zero-padded at a random place to the shortest length): of up to ``tries`` random crops, the
    first within 10 dB of the whole clip's RMS, else the loudest one."""
    short = int(seconds[0] * SAMPLE_RATE)
    if wav.size < short:
        offset = int(rng.integers(0, short - wav.size + 1))
        return np.pad(wav, (offset, short - wav.size - offset)).astype(np.float32)
    length = min(int(rng.uniform(*seconds) * SAMPLE_RATE), wav.size)
    goal = float(np.sqrt(np.mean(np.square(wav, dtype=np.float64)))) * 10 ** (-10 / 20)
    best, best_rms = wav[:length], -1.0
    for _ in range(tries):
        start = int(rng.integers(0, wav.size - length + 1))
        crop = wav[start:start + length]
        rms = float(np.sqrt(np.mean(np.square(crop, dtype=np.float64))))
        if rms > best_rms:
            best, best_rms = crop, rms
        if rms >= goal:
            break
    return best.astype(np.float32)


def event_clip(events: Sequence[np.ndarray], rng: np.random.Generator, seconds: tuple[float, float] = (3.0, 6.0),
               gap: tuple[float, float] = (0.15, 0.8)) -> tuple[np.ndarray, int]:
    """A clip [S] of ``seconds`` (drawn uniformly) from 16 kHz ``events``: random events joined
    with silent gaps until it is long enough, each 0-3 dB quieter; an event longer than the
    clip is cropped at random. Returns the clip and the number of events in it."""
    target = int(rng.uniform(*seconds) * SAMPLE_RATE)
    pieces, length = [], 0
    while length < target:
        event = events[int(rng.integers(len(events)))]
        if event.size > target:
            start = int(rng.integers(0, event.size - target + 1))
            event = event[start:start + target]
        silence = np.zeros(int(rng.uniform(*gap) * SAMPLE_RATE) if pieces else 0, np.float32)
        pieces.append(np.concatenate([silence, event * np.float32(10 ** (rng.uniform(-3, 0) / 20))]))
        length += pieces[-1].size
    return np.concatenate(pieces)[:target], len(pieces)


def augment(wav: np.ndarray, rng: np.random.Generator, semitones: float = 2.0,
            reverb: float = 0.3, noise: float = 0.3) -> tuple[np.ndarray, list[str]]:
    """wav [S] 16 kHz with a random pitch shift of up to +-``semitones`` (by resampling), a
    synthetic room with probability ``reverb``, a brown-noise floor 30-40 dB down with
    probability ``noise``, and a peak of 0.3-0.9. Returns the new clip and what was done."""
    done = []
    shift = float(rng.uniform(-semitones, semitones))
    if abs(shift) > 0.05:
        wav = resample(wav.astype(np.float32), round(SAMPLE_RATE * 2 ** (shift / 12)), SAMPLE_RATE)
        done.append(f"pitch {shift:+.2f} semitones (resampled)")
    if rng.random() < reverb:
        rt60 = float(rng.uniform(0.2, 0.6))
        wav = scipy.signal.fftconvolve(wav, synthetic_rir(rt60, SAMPLE_RATE, rng))[:wav.size]
        done.append(f"synthetic room RT60 {rt60:.2f} s")
    if rng.random() < noise:
        floor = scipy.signal.lfilter([1.0], [1.0, -0.95], rng.standard_normal(wav.size))
        level = float(rng.uniform(-40, -30))
        wav = wav + floor / np.sqrt(np.mean(floor ** 2)) * np.sqrt(np.mean(wav ** 2)) * 10 ** (level / 20)
        done.append(f"brown noise floor at {level:.0f} dB")
    peak = float(rng.uniform(0.3, 0.9))
    done.append(f"peak {peak:.2f}")
    return (wav / max(float(np.abs(wav).max()), 1e-6) * peak).astype(np.float32), done


# ----------------------------------------------------------------------------- shared by the corpora

SFX_PACKAGES = ("qabcs-data", "scratch", "sonic-pi-samples", "lmms-common", "tuxpaint-stamps-default",
                "lugaru-data", "scorched3d-data", "hedgewars-data", "wesnoth-1.16-data", "trophy-data",
                "etw-data", "minetest-data", "mate-media-common")
TOOL_PACKAGES = ("fluidsynth", "timgm6mb-soundfont", "mma", "flite", "espeak-ng")
SOUNDFONT = Path("/usr/share/sounds/sf2/TimGM6mb.sf2")

# label -> (caption phrasings, first = the canonical prompt; file-name pattern over the packages)
SFX = {
    "dog": (["a dog barking", "a dog barks several times", "dog barking", "a barking dog"],
            r"/(dog[123]?|bark[23]?|barkgrowl)\.(ogg|wav)$"),
    "crowd": (["a crowd cheering", "a cheering crowd", "crowd noise in a stadium", "people cheering and applauding"],
              r"/(crowd\d*|cheering|cheeringloop|applause01|raving_crowd01)\.(ogg|wav)$"),
    "footsteps": (["footsteps", "someone walking", "footsteps on the ground", "a person walking"],
                  r"/(footsteps-\d|footstep(grass|snow|stone)\d|steps|default_\w+_footstep(\.\d)?)\.(ogg|wav|mp3)$"),
    "thunder": (["thunder rumbling", "a thunderstorm", "thunder and lightning", "a loud thunderclap"],
                r"/(thunder\d?|lightning|lightningbolt)\.(ogg|wav)$"),
    "bird": (["birds chirping", "a bird singing", "birdsong", "small birds tweeting"],
             r"/(bird|sparrow|blackbird|lark|cuckoo|birdchirp\d|birds\d)\.(ogg|wav)$"),
    "horse": (["a horse neighing", "a horse", "horse sounds", "a horse galloping"],
              r"/(horse|foal|horsegallop|horse-(elf-)?canter|horse-die|horse-hit-\d)\.(ogg|wav)$"),
    "laughter": (["people laughing", "a man laughing", "laughter", "someone laughs out loud"],
                 r"/(laugh|laugh-(female|male\d)|witches-laugh|dwarf-laugh)\.(ogg|wav|mp3)$"),
    "cough": (["a person coughing", "someone coughing", "coughing", "a man coughs"],
              r"/(cough-(female|male)|poisoncough)\.(ogg|wav)$"),
    "explosion": (["an explosion", "a loud explosion", "a bomb exploding", "a blast"],
                  r"/(explosions/(large|medium|small|xlarge|exp|tank)|explode01|explosion|tnt_explode)\.(ogg|wav)$"),
    "fire": (["a fire crackling", "a crackling campfire", "fire burning", "flames crackling"],
             r"/(noises/fire|sounds/fire|campfire|fire_fire\.\d|fire_large|fire_small|trophy/sounds/fire)\.(ogg|wav)$"),
}
# classes the demo model never saw (its fine-tuning demo): same form as SFX, from these packages too
NEW_SFX = {
    "cow": (["a cow mooing", "a cow moos", "cattle mooing", "a mooing cow"],
            r"/(cow|cows|cow_white|moo|cow_(ack|die|select)\d)\.(ogg|wav)$"),
    "sheep": (["a sheep bleating", "sheep baaing", "a bleating sheep", "a lamb bleating"],
              r"(?<!/Music)/(sheep|sheep_lamb|sheep\d+|sheep_die\d|sheep_\d\d)\.(ogg|wav)$"),
}
NEW_SFX_PACKAGES = ("megaglest-data", "widelands-data")
# label -> (caption phrasings, MMA grooves, General MIDI instruments heard)
MUSIC = {
    "bossa nova": (["bossa nova music", "a bossa nova song", "a relaxed bossa nova groove"],
                   ("BossaNova", "BossaNovaSus", "BossaNovaPlus"), "nylon guitar, bass and brushes"),
    "rock": (["rock music", "a rock song with drums and electric guitar", "an upbeat rock beat"],
             ("50sRock", "60sRock", "8Beat", "SoftRock", "BasicRock", "Rock128"), "electric guitar, bass and drums"),
    "swing jazz": (["swing jazz", "a jazz band playing swing", "an upbeat swing tune"],
                   ("Swing", "BigBand", "JazzCombo", "EasySwing"), "piano, walking bass and ride cymbal"),
    "march": (["a military march", "marching band music", "a brass band march"],
              ("March", "68March", "DixieMarch"), "brass, snare drum and bass drum"),
    "waltz": (["a waltz", "a gentle waltz in three four time", "waltz music"],
              ("Waltz", "VieneseWaltz", "CountryWaltz"), "strings, piano and bass"),
}
# MMA sequences (beat, length, velocity) for the solos: a bar of quavers, crotchets, a mixed bar
SOLO_RHYTHMS = ("1 8 90; 1.5 8 80; 2 8 85; 2.5 8 75; 3 8 90; 3.5 8 80; 4 8 85; 4.5 8 75",
                "1 4 90; 2 4 80; 3 4 85; 4 4 80", "1 4 90; 2 8 80; 2.5 8 75; 3 2 85",
                "1 8 90; 1.5 8 80; 2 4 85; 3 8 85; 3.5 8 80; 4 4 80")
PROGRESSIONS = (("I", "vi", "ii", "V"), ("I", "IV", "V", "I"), ("ii", "V", "I", "I"), ("I", "vi", "IV", "V"),
                ("I", "V", "vi", "IV"), ("vi", "IV", "I", "V"))
KEYS = ("C", "D", "Eb", "F", "G", "A", "Bb")


def chord(degree: str, key: str) -> str:
    """MMA chord name of a Roman-numeral degree in a major key (vi / ii minor sevenths, V dominant)."""
    names = ("C", "Db", "D", "Eb", "E", "F", "Gb", "G", "Ab", "A", "Bb", "B")
    steps = {"I": 0, "ii": 2, "IV": 5, "V": 7, "vi": 9}[degree]
    root = names[(names.index(key) + steps) % 12]
    return root + {"I": "", "ii": "m7", "IV": "", "V": "7", "vi": "m"}[degree]


def render_song(song: str, work: Path, soundfont: Path = SOUNDFONT) -> np.ndarray:
    """MMA song text -> MIDI (mma) -> 16 kHz mono wav [S] (fluidsynth with ``soundfont``, by default TimGM6mb)."""
    mma, mid, wav_path = work / "song.mma", work / "song.mid", work / "song.wav"
    mma.write_text(song)
    subprocess.run(["mma", str(mma), "-f", str(mid)], check=True, capture_output=True)
    subprocess.run(["fluidsynth", "-ni", "-q", "-F", str(wav_path), "-r", str(SAMPLE_RATE),
                    str(soundfont), str(mid)], check=True, capture_output=True)
    return trim(load_audio(wav_path, SAMPLE_RATE).numpy())


def coloured_noise(exponent: float, samples: int, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise [samples] whose power falls as f^-exponent above 20 Hz, unit RMS."""
    spectrum = np.fft.rfft(rng.standard_normal(samples))
    spectrum *= np.maximum(np.fft.rfftfreq(samples, 1 / SAMPLE_RATE), 20.0) ** (-exponent / 2)
    wav = np.fft.irfft(spectrum, samples)
    return wav / np.sqrt(np.square(wav).mean())


def mains_hum(fundamental: float, samples: int, rng: np.random.Generator) -> np.ndarray:
    """Hum [samples]: ``fundamental`` and 7 harmonics (amplitude 1/k, random phases, a slow
    wobble) over pink noise 30 dB down, unit RMS."""
    t = np.arange(samples) / SAMPLE_RATE
    wobble = 1 + 0.2 * np.sin(2 * np.pi * rng.uniform(0.1, 0.5) * t)
    wav = sum(np.sin(2 * np.pi * k * fundamental * t + rng.uniform(0, 2 * np.pi)) / k for k in range(1, 9))
    wav = wav * wobble
    wav = wav / np.sqrt(np.square(wav).mean()) + 10 ** (-30 / 20) * coloured_noise(1.0, samples, rng)
    return wav / np.sqrt(np.square(wav).mean())


def babble(speech: Sequence[dict], samples: int, rng: np.random.Generator, voices: int = 6) -> tuple[np.ndarray, list[str]]:
    """``voices`` utterances of distinct speakers, each looped from a random offset at
    equal RMS and summed -> (babble [samples], unit RMS; the audio_ids used)."""
    speakers = sorted({r["speaker"] for r in speech})
    chosen = rng.choice(speakers, size=min(voices, len(speakers)), replace=False)
    wav, used = np.zeros(samples), []
    for speaker in chosen:
        record = rng.choice([r for r in speech if r["speaker"] == speaker])
        voice = load_audio(record["audio"], SAMPLE_RATE).double().numpy()
        voice = np.roll(np.tile(voice, samples // voice.size + 1)[:samples], int(rng.integers(samples)))
        wav += voice / np.sqrt(np.square(voice).mean() + 1e-12)
        used.append(record["audio_id"])
    return wav / np.sqrt(np.square(wav).mean()), used
