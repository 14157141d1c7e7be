"""Build the offline probe tasks: labelled 1-3 s clips that measure what a frozen encoder's latents know.

    python recipes/probe_tasks/build.py --out data/probe_tasks [--install] [--demo-corpus PATH]
        [--seed 0] [--tasks keywords,speaker_id] [--limit-per-split 40 | --small]

X-ARES-style clip classification (github.com/jimbozhang/xares), built from Debian packages only:
``sound_events`` (1-3 s crops of the demo corpus's held-out sources, which the demo tokenizer and
DiT never saw), ``music_style`` and ``instrument`` (MMA songs rendered with fluidsynth and
FluidR3_GM, a soundfont the demo did not use), ``speaker_id``, ``speaker_gender`` and ``keywords``
(flite and espeak-ng voices). Writes ``<out>/<task>/*.wav`` (16 kHz mono), ``<out>/<task>.jsonl``
({"audio_id", "audio", "label", "source", "split", "duration"}; audio relative to ``<out>``),
``<out>/tasks.json`` (what each task measures, classes, clips per split, split_by, chance) and
``<out>/summary.json`` (labels, sources per split, dropped classes, package versions, seconds).
Splits are by source (recording, song, voice), or by sentence for speaker_id, whose label is the
voice; every class has the same number of clips in a split. Deterministic given --seed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dashflow.audio import SAMPLE_RATE, load_audio, save_audio
from dashflow.demo_corpus import (
    KEYS,
    MUSIC,
    PROGRESSIONS,
    SFX,
    SFX_PACKAGES,
    SOLO_RHYTHMS,
    TOOL_PACKAGES,
    chord,
    render_song,
    augment,
    licence_sentences,
    loud_crop,
    package_version,
    split_three_ways,
    synthesize,
    trim,
)
from dashflow.errors import DashflowError
from dashflow.manifests import read_manifest, write_manifest

DEMO_CORPUS_RECIPE = Path(__file__).resolve().parents[1] / "demo" / "build_corpus.py"
SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")  # the demo rendered with TimGM6mb
PACKAGES = ("fluid-soundfont-gm",)
SPLITS = ("train", "val", "test")
CLIPS = {"train": 600, "val": 150, "test": 400}  # at least, per task; 400 test clips: 95 % CI half-width <= 5 points
SMALL_CLIPS, SMALL_SONGS = 24, 3
SONGS_PER_LABEL, SENTENCES = 16, 80
FLOOR_RMS = 1e-3  # a clip quieter than -60 dBFS counts as silent
TASKS = ("sound_events", "music_style", "instrument", "speaker_id", "speaker_gender", "keywords")

# style -> MMA grooves; the demo's five styles with their grooves, plus four more families
STYLES = {**{label: spec[1] for label, spec in MUSIC.items()},
          "tango": ("Tango", "Tango1", "TangoClean", "LightTango", "LightTango1"),
          "polka": ("Polka", "Polka1", "PolkaArp", "Polka1Arp"),
          "blues": ("Blues", "Blues1", "SlowBlues", "FastBlues", "BluesTriple"),
          "afro-cuban": ("Mambo", "ChaCha", "Salsa", "Rhumba", "Mambo1")}
# General MIDI program family -> MMA voice names of programs in it
FAMILIES = {"piano": ("Piano1", "Piano2", "Honky-TonkPiano", "EPiano", "HarpsiChord"),
            "chromatic percussion": ("Vibraphone", "Marimba", "Xylophone", "Glockenspiel", "Celesta"),
            "organ": ("Organ1", "Organ2", "ChurchOrgan", "ReedOrgan", "Accordion"),
            "guitar": ("NylonGuitar", "SteelGuitar", "JazzGuitar", "CleanGuitar", "OverDriveGuitar"),
            "strings": ("Violin", "Viola", "Cello", "TremoloStrings", "OrchestralHarp"),
            "brass": ("Trumpet", "Trombone", "FrenchHorn", "MutedTrumpet", "BrassSection"),
            "reed": ("SopranoSax", "AltoSax", "TenorSax", "Oboe", "Clarinet"),
            "pipe": ("Flute", "Piccolo", "Recorder", "PanFlute", "Ocarina")}
# espeak-ng variants whose files (espeak-ng-data/voices/!v) declare a gender; robotic, whispering
# and demonic ones left out. Each plays one English accent, in turn.
FEMALE = ("f1", "f2", "f3", "f4", "f5", "Alicia", "Andrea", "Annie", "anika", "aunty", "belinda", "grandma",
          "linda", "steph")
MALE = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "Andy", "Denis", "Diogo", "Henrique", "Hugo", "Lee",
        "Marco", "Storm", "antonio", "michel", "miguel", "sandro", "travis", "victor")
ACCENTS = ("en-us", "en", "en-gb-x-rp", "en-gb-scotland")
# voice id -> (engine, voice, gender)
VOICES = {"slt": ("flite", "slt", "female"), "rms": ("flite", "rms", "male"), "awb": ("flite", "awb", "male"),
          "kal16": ("flite", "kal16", "male"),
          **{f"espeak_{v}": ("espeak-ng", f"{ACCENTS[i % len(ACCENTS)]}+{v}", "female" if v in FEMALE else "male")
             for i, v in enumerate(FEMALE + MALE)}}
SPEAKER_IDS = ("slt", "rms", "awb", "kal16", "espeak_m1", "espeak_m3", "espeak_m6", "espeak_f1", "espeak_f3",
               "espeak_f5", "espeak_Andy", "espeak_belinda")
WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go", "zero", "seven")

DESCRIPTIONS = {  # task -> (measures, cannot_measure, split_by)
    "sound_events": (
        "Sound-event category (the demo's event classes, from Debian game / education sound packages, plus "
        "TTS speech) of recordings the demo tokenizer and DiT never trained on, from 1-3 s crops.",
        "Real-world field recordings (these are curated game/library sounds); generalisation across "
        "many sources (each class has only a few held-out recordings, so test clips are correlated and "
        "the nominal CI is optimistic); the demo's augmentation (pitch, room, noise) is already in them.",
        "source recording"),
    "music_style": (
        "Musical style (MMA groove family) of 1-3 s crops of rendered songs with random key, tempo and "
        "chord progression shared across styles, in a soundfont the demo never used.",
        "Real recorded music or production style; style is confounded with each groove's fixed "
        "accompaniment instruments, so timbre alone can score; tempo and harmony are not style cues here.",
        "song"),
    "instrument": (
        "General MIDI program family of a solo melody (random notes over chords), 1-3 s crops, "
        "FluidR3_GM soundfont.",
        "Unseen instruments of a family (every program occurs in train and test, with different melodies); "
        "real playing technique and recording; polyphonic or mixed instruments.",
        "song"),
    "speaker_id": (
        f"Which of {len(SPEAKER_IDS)} TTS voices (flite and espeak-ng) speaks a 1-3 s crop; sentences differ "
        "between splits.",
        "Real speakers, channels or emotions; generalisation to unseen speakers (the label is the voice, so "
        "the split is by sentence: every voice is in every split); espeak voices share one synthesiser.",
        "sentence (the label is the voice)"),
    "speaker_gender": (
        f"Female vs male voice on voices unseen in training ({len(FEMALE) + 1} female, {len(MALE) + 3} male TTS "
        "voices). Two classes: the 'at least 5 classes' rule is waived for this task.",
        "Real voices; gender is partly confounded with the engine (3 of 4 flite voices are male) and with "
        "mean pitch; few voices per split, so the nominal CI is optimistic.",
        "voice"),
    "keywords": (
        f"Which of {len(WORDS)} spoken command words (Speech Commands style) a 1-1.5 s clip (longer only for a "
        "long word) holds, said by voices unseen in training at random rate (0.75-1.3x) and pitch (+-3 semitones).",
        "Real speech, natural noise or far-field audio; open-vocabulary recognition; TTS words are far more "
        "regular than human ones.",
        "voice"),
}


@dataclass
class Task:
    """A probe task before its audio exists: the sources of each label, their split, a clip maker."""

    name: str
    sources: dict[str, list[str]]  # label -> its source ids
    splits: dict[str, str]         # source id -> "train" / "val" / "test"
    make: Callable[[str, str, int, np.random.Generator], np.ndarray]  # (label, source, use, rng) -> clip [S]
    dropped: tuple[str, ...] = ()  # labels left out, with why


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def write_task(task: Task, out: Path, rng: np.random.Generator, clips: dict[str, int]) -> list[dict]:
    """Write ``out/<task>/*.wav`` and ``out/<task>.jsonl``: per split, ``ceil(clips[split] / classes)``
    clips of every label, its sources of that split taken in turn. Returns the manifest records."""
    folder = out / task.name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    records = []
    for split in SPLITS:
        per_label = math.ceil(clips[split] / len(task.sources))
        for label in sorted(task.sources):
            pool = [s for s in task.sources[label] if task.splits[s] == split]
            if not pool:
                raise DashflowError(f"{task.name}: label {label!r} has no {split} source")
            for index in range(per_label):
                source = pool[index % len(pool)]
                wav = task.make(label, source, index // len(pool), rng)
                rms = float(np.sqrt(np.mean(np.square(wav, dtype=np.float64))))
                if not 1.0 <= wav.size / SAMPLE_RATE <= 3.0 or rms < FLOOR_RMS:
                    raise DashflowError(f"{task.name}: a {wav.size / SAMPLE_RATE:.2f} s clip at RMS {rms:.1e} "
                                        f"from {source!r}")
                audio_id = f"{task.name}_{split}_{slug(label)}_{index:04d}"
                save_audio(folder / f"{audio_id}.wav", wav)
                records.append({"audio_id": audio_id, "audio": str(folder / f"{audio_id}.wav"), "label": label,
                                "source": source, "split": split, "duration": round(wav.size / SAMPLE_RATE, 3)})
    write_manifest(records, out / f"{task.name}.jsonl")
    return records


def task_card(name: str, records: list[dict]) -> dict:
    """tasks.json's entry for ``name`` from its manifest records."""
    measures, cannot, split_by = DESCRIPTIONS[name]
    classes = len({r["label"] for r in records})
    return {"measures": measures, "cannot_measure": cannot, "classes": classes,
            "clips": {s: sum(r["split"] == s for r in records) for s in SPLITS}, "split_by": split_by,
            "chance": 1 / classes}


def crossing_sources(records: list[dict]) -> list[str]:
    """Sources found in more than one split (must be empty)."""
    splits: dict[str, set[str]] = {}
    for record in records:
        splits.setdefault(record["source"], set()).add(record["split"])
    return sorted(s for s, found in splits.items() if len(found) > 1)


# ----------------------------------------------------------------------------- the tasks

def level(wav: np.ndarray, rng: np.random.Generator, room: float = 0.3) -> np.ndarray:
    """No pitch shift; a synthetic room / noise floor with probability ``room``; a peak of 0.3-0.9."""
    return augment(wav, rng, semitones=0.0, reverb=room, noise=room)[0]


def sound_events(demo_corpus: Path, seed: int) -> Task:
    """Crops of the demo corpus's held-out clips of its sound-event and speech classes."""
    labels = {*SFX, "speech"}
    clips: dict[str, list[str]] = {}
    owner = {}
    for record in read_manifest(demo_corpus / "heldout.jsonl"):
        if record["label"] in labels:
            clips.setdefault(record["source"], []).append(record["audio"])
            owner[record["source"]] = record["label"]
    sources: dict[str, list[str]] = {}
    for source, label in sorted(owner.items()):
        sources.setdefault(label, []).append(source)
    dropped = tuple(f"{label} ({len(ids)} held-out source(s), 3 needed)" for label, ids in sources.items()
                    if len(ids) < 3)
    sources = {label: ids for label, ids in sources.items() if len(ids) >= 3}

    def make(label: str, source: str, use: int, rng: np.random.Generator) -> np.ndarray:
        paths = clips[source]
        wav = load_audio(paths[use % len(paths)], SAMPLE_RATE).numpy()
        return level(loud_crop(wav, rng), rng, room=0.0)  # the demo already augmented them

    return Task("sound_events", sources, split_three_ways([(lab, s) for lab, ids in sources.items() for s in ids],
                                                          seed), make, dropped)


def mma_song(number: int, key: str, tempo: int, progression: tuple[str, ...], part: str) -> str:
    """MMA text of a 12-bar song: ``part`` (a Groove line or a solo track) over the progression x 3."""
    bars = [chord(degree, key) for degree in progression] * 3
    return f"RndSeed {number}\nTempo {tempo}\nKeySig {key}\n{part}" + "".join(f"{i + 1} {c}\n" for i, c in enumerate(bars))


def music(name: str, songs_per_label: int, seed: int, work: Path) -> Task:
    """``music_style`` (MMA grooves) or ``instrument`` (solo melodies): songs rendered with FluidR3_GM."""
    rng = np.random.default_rng([seed, 1 if name == "music_style" else 2])
    table = STYLES if name == "music_style" else FAMILIES
    sources: dict[str, list[str]] = {}
    audio: dict[str, np.ndarray] = {}
    for label, choices in table.items():
        for number in range(songs_per_label):
            key, tempo = KEYS[int(rng.integers(len(KEYS)))], int(rng.integers(90, 150))
            progression = PROGRESSIONS[int(rng.integers(len(PROGRESSIONS)))]
            if name == "music_style":
                part = f"Groove {choices[number % len(choices)]}\n"
            else:
                rhythm = SOLO_RHYTHMS[number % len(SOLO_RHYTHMS)]
                part = (f"Begin Arpeggio\n Voice {choices[number % len(choices)]}\n Sequence {{{rhythm}}}\n"
                        f" Octave 5\n Range 2\n Direction Random\nEnd\n")
            song_id = f"{slug(label)}_{number:02d}"
            song = mma_song(seed * 10000 + len(audio), key, tempo, progression, part)
            audio[song_id] = render_song(song, work, SOUNDFONT)
            sources.setdefault(label, []).append(song_id)

    def make(label: str, source: str, use: int, rng: np.random.Generator) -> np.ndarray:
        return level(loud_crop(audio[source], rng), rng)

    return Task(name, sources, split_three_ways([(lab, s) for lab, ids in sources.items() for s in ids], seed), make)


class Speaker:
    """TTS with a cache folder: (voice id, text, rate) -> trimmed 16 kHz speech [S]. ``synth`` is
    ``synthesize`` or a stand-in with its signature."""

    def __init__(self, cache: Path, synth: Callable[..., float] = synthesize):
        self.cache, self.synth = cache, synth

    def __call__(self, voice: str, text: str, rate: float = 1.0) -> np.ndarray:
        engine, name, _ = VOICES[voice]
        path = self.cache / f"{hashlib.sha1(f'{voice}|{text}|{rate:.3f}'.encode()).hexdigest()[:16]}.wav"
        if not path.is_file():
            self.synth(engine, name, text, path, rate=rate)
        return trim(load_audio(path, SAMPLE_RATE).numpy())


def speaker_id(speak: Speaker, sentences: list[str], seed: int) -> Task:
    """12 voices read the same sentences; the split is by sentence."""
    ids = [f"sentence_{i:03d}" for i in range(len(sentences))]
    text = dict(zip(ids, sentences))

    def make(label: str, source: str, use: int, rng: np.random.Generator) -> np.ndarray:
        return level(loud_crop(speak(label, text[source]), rng), rng)

    return Task("speaker_id", {voice: ids for voice in SPEAKER_IDS},
                split_three_ways([("sentence", s) for s in ids], seed), make)


def speaker_gender(speak: Speaker, sentences: list[str], seed: int) -> Task:
    """Every voice reads sentences in turn; the split is by voice, per gender."""
    sources: dict[str, list[str]] = {}
    for voice, (_, _, gender) in VOICES.items():
        sources.setdefault(gender, []).append(voice)

    def make(label: str, source: str, use: int, rng: np.random.Generator) -> np.ndarray:
        return level(loud_crop(speak(source, sentences[use % len(sentences)]), rng), rng)

    return Task("speaker_gender", sources,
                split_three_ways([(g, v) for g, voices in sources.items() for v in voices], seed), make)


def keywords(speak: Speaker, seed: int) -> Task:
    """Single words by every voice at a random rate and pitch, placed in a 1-1.5 s clip; split by voice."""
    def make(label: str, source: str, use: int, rng: np.random.Generator) -> np.ndarray:
        word = speak(source, label, rate=round(float(rng.uniform(0.75, 1.3)), 2))
        word = augment(word, rng, semitones=3.0, reverb=0.0, noise=0.0)[0][:int(2.9 * SAMPLE_RATE)]
        length = max(int(rng.uniform(1.0, 1.5) * SAMPLE_RATE), word.size + SAMPLE_RATE // 10)
        offset = int(rng.integers(0, length - word.size + 1))
        return level(np.pad(word, (offset, length - word.size - offset)), rng)

    return Task("keywords", {word: list(VOICES) for word in WORDS},
                split_three_ways([("voice", v) for v in VOICES], seed), make)


# ----------------------------------------------------------------------------- the build

def build(out: Path, seed: int = 0, tasks: tuple[str, ...] = TASKS, demo_corpus: Path | None = None,
          clips: dict[str, int] | None = None, songs_per_label: int = SONGS_PER_LABEL) -> dict:
    """Build ``tasks`` under ``out`` (tasks.json keeps other tasks' entries); returns {"tasks": tasks.json's
    dict, "summary": summary.json's}."""
    started, clips = time.monotonic(), clips or CLIPS
    out.mkdir(parents=True, exist_ok=True)
    cards_path, summary_path = out / "tasks.json", out / "summary.json"
    cards = json.loads(cards_path.read_text()) if cards_path.is_file() else {}
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {"tasks": {}}
    sentences = [text for _, text in licence_sentences()[:SENTENCES]]
    with tempfile.TemporaryDirectory() as tmp:
        speak = Speaker(Path(tmp))
        for index, name in enumerate(tasks):
            begun = time.monotonic()
            if name == "sound_events":
                demo_corpus = demo_corpus or out / "demo_corpus"
                if not (demo_corpus / "heldout.jsonl").is_file():
                    print(f"building the demo corpus in {demo_corpus} (recipes/demo/build_corpus.py)", flush=True)
                    subprocess.run([sys.executable, str(DEMO_CORPUS_RECIPE), "--out", str(demo_corpus)], check=True)
                task = sound_events(demo_corpus, seed)
            elif name in ("music_style", "instrument"):
                task = music(name, songs_per_label, seed, Path(tmp))
            elif name == "speaker_id":
                task = speaker_id(speak, sentences, seed)
            elif name == "speaker_gender":
                task = speaker_gender(speak, sentences, seed)
            elif name == "keywords":
                task = keywords(speak, seed)
            else:
                raise DashflowError(f"unknown task {name!r}; choose from {', '.join(TASKS)}")
            records = write_task(task, out, np.random.default_rng([seed, 100 + TASKS.index(name)]), clips)
            crossing = crossing_sources(records)
            if crossing:
                raise DashflowError(f"{name}: sources in two splits: {crossing[:5]}")
            cards[name] = task_card(name, records)
            summary["tasks"][name] = {
                "labels": dict(Counter(r["label"] for r in records)),
                "sources": {s: sorted({r["source"] for r in records if r["split"] == s}) for s in SPLITS},
                "dropped": list(task.dropped), "hours": round(sum(r["duration"] for r in records) / 3600, 3),
                "seconds": round(time.monotonic() - begun, 1)}
            print(f"[{index + 1}/{len(tasks)}] {name}: {cards[name]['classes']} classes, {cards[name]['clips']}, "
                  f"{summary['tasks'][name]['seconds']} s", flush=True)
    cards_path.write_text(json.dumps(cards, indent=2) + "\n")
    summary.update({"seed": seed, "seconds": round(time.monotonic() - started, 1),
                    "packages": {p: package_version(p) for p in ("fluid-soundfont-gm", "fluidsynth", "mma", "flite",
                                                                   "espeak-ng-data")}})
    summary_path.write_text(json.dumps(summary, indent=2) + "\n")
    return {"tasks": cards, "summary": summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("data/probe_tasks"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated subset of " + ", ".join(TASKS))
    parser.add_argument("--demo-corpus", type=Path, help="an existing demo corpus (default: build one in "
                        "<out>/demo_corpus unless it is there)")
    parser.add_argument("--limit-per-split", type=int, help="clips per split and task (a quick test), instead of "
                        + ", ".join(f"{s} {n}" for s, n in CLIPS.items()))
    parser.add_argument("--small", action="store_true", help=f"--limit-per-split {SMALL_CLIPS} and "
                        f"{SMALL_SONGS} songs per music label")
    parser.add_argument("--install", action="store_true", help="apt-get install the packages (root)")
    args = parser.parse_args()
    if args.install:
        subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *SFX_PACKAGES,
                        *TOOL_PACKAGES, *PACKAGES], check=True)
    limit = args.limit_per_split or (SMALL_CLIPS if args.small else None)
    clips = {s: min(n, limit) for s, n in CLIPS.items()} if limit else CLIPS
    songs = SMALL_SONGS if args.small else SONGS_PER_LABEL
    started = time.monotonic()
    result = build(args.out.resolve(), args.seed, tuple(t.strip() for t in args.tasks.split(",") if t.strip()),
                   args.demo_corpus.resolve() if args.demo_corpus else None, clips, songs)
    print(f"{'task':16s} {'classes':>7s} {'train':>6s} {'val':>5s} {'test':>5s} {'seconds':>7s}  split by")
    for name, card in result["tasks"].items():
        seconds = result["summary"]["tasks"][name]["seconds"]
        print(f"{name:16s} {card['classes']:7d} {card['clips']['train']:6d} {card['clips']['val']:5d} "
              f"{card['clips']['test']:5d} {seconds:7.0f}  {card['split_by']}")
        for why in result["summary"]["tasks"][name]["dropped"]:
            print(f"  dropped class: {why}")
    print(f"built in {time.monotonic() - started:.0f} s -> {args.out}")


if __name__ == "__main__":
    main()
