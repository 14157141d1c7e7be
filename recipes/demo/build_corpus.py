"""Build the demo text-to-audio corpus: real recordings from Debian packages, MIDI music, TTS speech.

    python recipes/demo/build_corpus.py --out data/demo_corpus [--install] [--seconds-per-class 300]
    python recipes/demo/build_corpus.py --new-classes --out data/new_classes [--install]

``--new-classes`` builds, the same way, only the sound classes the demo model never saw (cow,
sheep: the fine-tuning demo, ``recipes/demo/finetune.sh``).

Classes: 10 sound-event classes with at least 8 distinct source
recordings each, 5 music styles rendered from MMA grooves and 6 solo instruments playing MMA
melodies, both with fluidsynth and the TimGM6mb General MIDI soundfont (each song a source), and
speech (flite / espeak-ng voices, each voice a source). Clips are 3-6 s of natural event length:
short recordings are repeated with random gaps (a dog barks several times), long ones are cropped; each clip is augmented (gain,
+-2 semitones, sometimes a synthetic room or a quiet noise floor).

The split is by source recording, deterministic: about 40 % of the sources of every class (at
least 3) are ``heldout`` (for the in-house classifier), the rest ``train`` (tokenizer + DiT).
Writes ``audio/*.wav`` (16 kHz mono), ``manifest.jsonl`` ({"audio_id", "audio", "caption",
"captions", "label", "source", "split", "duration"}), ``train.jsonl``, ``heldout.jsonl`` (each also
as ``*_ttm.jsonl``, the music and instruments, and ``*_tta.jsonl``, the rest: the unified demo's tasks),
``ATTRIBUTION.csv`` (one row per clip: package, version, original file, licences, caption,
transforms) and ``summary.json``. The corpus stays out of git; this script rebuilds it.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dashflow.audio import SAMPLE_RATE, load_audio, save_audio
from dashflow.demo_corpus import (
    KEYS,
    MUSIC,
    NEW_SFX,
    NEW_SFX_PACKAGES,
    PROGRESSIONS,
    SFX,
    SFX_PACKAGES,
    SOLO_RHYTHMS,
    SPEAKERS,
    TOOL_PACKAGES,
    TRANSFORMS,
    augment,
    chord,
    event_clip,
    licence_sentences,
    package_licences,
    package_version,
    render_song,
    split_by_source,
    synthesize,
    trim,
)
from dashflow.errors import DashflowError
from dashflow.manifests import write_manifest

# label -> (caption phrasings, General MIDI instrument as MMA names it): solo melodies over chords
INSTRUMENTS = {
    "piano": (["a piano playing", "a piano melody", "solo piano", "someone playing the piano"], "Piano1"),
    "violin": (["a violin playing", "a violin melody", "solo violin", "someone playing the violin"], "Violin"),
    "trumpet": (["a trumpet playing", "a trumpet melody", "solo trumpet", "someone playing the trumpet"], "Trumpet"),
    "flute": (["a flute playing", "a flute melody", "solo flute", "someone playing the flute"], "Flute"),
    "organ": (["a church organ playing", "an organ melody", "solo pipe organ", "someone playing the organ"],
              "ChurchOrgan"),
    "guitar": (["an acoustic guitar playing", "a guitar melody", "solo acoustic guitar",
                "someone playing the guitar"], "SteelGuitar"),
}
SPEECH = ["a person speaking", "someone talking", "a voice reading a sentence", "speech"]
SONGS_PER_STYLE = 12
CLIP_SECONDS = (3.0, 6.0)
HELDOUT_FRACTION = 0.4  # of each class's sources, for the classifier: more sources, a fairer judge


@dataclass
class Source:
    """One original recording (or rendered song / TTS voice) and what it is."""

    label: str
    source_id: str
    package: str
    origin: str          # original file, or what was rendered / spoken
    events: list[np.ndarray]  # 16 kHz mono pieces the clips are made from


def installed_files(package: str) -> list[str]:
    """Audio files of ``package``, without spoken descriptions (tuxpaint ``*_desc``, qabcs words)."""
    result = subprocess.run(["dpkg", "-L", package], check=False, capture_output=True, text=True)
    return [line for line in result.stdout.splitlines()
            if re.search(r"\.(ogg|wav|flac|mp3)$", line, re.IGNORECASE) and "_desc" not in line
            and not re.search(r"/qabcs/abcs/(?!all/)", line)]


def sfx_sources(classes: dict[str, tuple[list[str], str]], packages: tuple[str, ...]) -> list[Source]:
    """Every file of ``packages`` whose path matches a class's pattern (``classes``: label ->
    (phrasings, pattern)) is one source."""
    sources, taken = [], set()
    for package in packages:
        for path in installed_files(package):
            for label, (_, pattern) in classes.items():
                if re.search(pattern, path, re.IGNORECASE):
                    try:
                        wav = trim(load_audio(path, SAMPLE_RATE, max_seconds=120.0).numpy())
                    except DashflowError as exc:
                        print(f"skipped: {exc}")
                        break
                    if wav.size >= SAMPLE_RATE // 10:
                        stem = re.sub(r"[^a-z0-9]+", "_", Path(path).stem.lower())
                        source_id = f"{package.split('-')[0]}_{stem}"
                        while source_id in taken:  # one name in two folders (scorched3d tank.wav)
                            source_id += "_b"
                        taken.add(source_id)
                        sources.append(Source(label, source_id, package, path, [wav]))
                    break
    return sources


def music_sources(work: Path, rng: np.random.Generator) -> tuple[list[Source], dict[str, str]]:
    """Render SONGS_PER_STYLE songs per MUSIC style and per INSTRUMENTS solo; returns sources and a
    caption per source. A song is a random key, tempo and chord progression; a style plays it with
    an MMA groove, a solo with one General MIDI instrument improvising over the chords."""
    sources, captions = [], {}
    for label in [*MUSIC, *INSTRUMENTS]:
        for number in range(SONGS_PER_STYLE):
            key, tempo = KEYS[int(rng.integers(len(KEYS)))], int(rng.integers(90, 150))
            progression = PROGRESSIONS[int(rng.integers(len(PROGRESSIONS)))]
            bars = [chord(d, key) for d in progression] * 3
            if label in MUSIC:
                phrasings, grooves, heard = MUSIC[label]
                tempo += 30 if label == "waltz" else 0
                groove = grooves[number % len(grooves)]
                part, played = f"Groove {groove}\n", f"MMA groove {groove}"
                caption = f"{phrasings[0]}, {groove} groove at {tempo} BPM in {key} major, {heard}"
            else:
                (phrasings, voice), rhythm = INSTRUMENTS[label], SOLO_RHYTHMS[number % len(SOLO_RHYTHMS)]
                part = (f"Begin Arpeggio\n Voice {voice}\n Sequence {{{rhythm}}}\n Octave 5\n Range 2\n"
                        f" Direction Random\nEnd\n")
                played = f"MMA solo arpeggio ({voice}, random direction)"
                caption = f"{phrasings[0]}, a melody in {key} major at {tempo} BPM"
            # MMA seeds its own randomness (velocities, arpeggio order) afresh unless told
            song = f"RndSeed {len(sources)}\nTempo {tempo}\nKeySig {key}\n{part}" + "".join(f"{i + 1} {c}\n" for i, c in enumerate(bars))
            source_id = f"mma_{label.replace(' ', '_')}_{number:02d}"
            sources.append(Source(label, source_id, "mma", f"{played}, {tempo} BPM, {key} major, chords "
                                  f"{'-'.join(bars[:4])}, rendered with fluidsynth + TimGM6mb",
                                  [render_song(song, work)]))
            captions[source_id] = caption
    return sources, captions


def speech_sources(work: Path, per_voice: int) -> list[Source]:
    """Every voice of SPEAKERS reads its own ``per_voice`` sentences; one voice is one source."""
    sentences = licence_sentences()
    sources = []
    for number, (speaker, (engine, voice)) in enumerate(SPEAKERS.items()):
        events = []
        for index in range(per_voice):
            _, text = sentences[number * per_voice + index]
            synthesize(engine, voice, text, work / "speech.wav")
            events.append(trim(load_audio(work / "speech.wav").numpy()))
        package = "libflite1" if engine == "flite" else "espeak-ng-data"
        sources.append(Source("speech", f"tts_{speaker}", package,
                              f"{engine} voice {voice} reading /usr/share/common-licenses sentences", events))
    return sources


def build(out: Path, seconds_per_class: float, seed: int = 0, new_classes: bool = False) -> dict:
    """Build the corpus under ``out`` (its audio/ folder is replaced); returns summary.json's dict.
    ``new_classes``: only the NEW_SFX classes the demo model never saw (the fine-tuning demo)."""
    rng = np.random.default_rng(seed)
    shutil.rmtree(out / "audio", ignore_errors=True)
    (out / "audio").mkdir(parents=True)
    if new_classes:
        sources, music_captions = sfx_sources(NEW_SFX, SFX_PACKAGES + NEW_SFX_PACKAGES), {}
        phrasings = {label: spec[0] for label, spec in NEW_SFX.items()}
    else:
        with tempfile.TemporaryDirectory() as tmp:
            music, music_captions = music_sources(Path(tmp), rng)
            sources = sfx_sources(SFX, SFX_PACKAGES) + music + speech_sources(Path(tmp), per_voice=12)
        phrasings = {**{label: spec[0] for label, spec in {**SFX, **MUSIC, **INSTRUMENTS}.items()}, "speech": SPEECH}
    counts = {label: sum(s.label == label for s in sources) for label in phrasings}
    thin = [f"{label} ({n})" for label, n in counts.items() if n < 8]
    if thin:
        raise DashflowError(f"fewer than 8 source recordings for {', '.join(thin)}: install the packages "
                            f"(--install)")
    heldout = split_by_source([(s.label, s.source_id) for s in sources], fraction=HELDOUT_FRACTION)
    versions, licences = {}, {}
    records, rows = [], []
    for source in sources:
        package = source.package
        versions.setdefault(package, package_version(package))
        licences.setdefault(package, package_licences(package))
        n_clips = math.ceil(seconds_per_class / counts[source.label] / np.mean(CLIP_SECONDS))
        for index in range(n_clips):
            if source.label == "speech":  # one whole sentence
                wav, n_events = source.events[int(rng.integers(len(source.events)))], 1
            else:
                wav, n_events = event_clip(source.events, rng, CLIP_SECONDS)
            wav, transforms = augment(wav, rng, semitones=0.0 if source.package == "mma" else 2.0)
            transforms.insert(0, f"{n_events} event(s) joined with 0.15-0.8 s gaps" if n_events > 1 else "one piece")
            audio_id = f"{source.source_id}_{index:02d}"
            save_audio(out / "audio" / f"{audio_id}.wav", wav)
            captions = phrasings[source.label]
            caption = (music_captions[source.source_id] if source.source_id in music_captions and index % 2 == 0
                       else captions[(len(records) + index) % len(captions)])
            records.append({"audio_id": audio_id, "audio": str(out / "audio" / f"{audio_id}.wav"), "caption": caption,
                            "captions": captions, "label": source.label, "source": source.source_id,
                            "split": "heldout" if source.source_id in heldout else "train",
                            "duration": round(wav.size / SAMPLE_RATE, 3)})
            rows.append([audio_id, source.label, records[-1]["split"], package, versions[package], source.origin,
                         licences[package], caption, "; ".join([TRANSFORMS, *transforms])])
    write_manifest(records, out / "manifest.jsonl")
    for split in ("train", "heldout"):
        write_manifest([r for r in records if r["split"] == split], out / f"{split}.jsonl")
        if not new_classes:  # the unified demo's text tasks: music and solo instruments are text-to-music
            music = [r for r in records if r["split"] == split and r["label"] in {*MUSIC, *INSTRUMENTS}]
            sounds = [r for r in records if r["split"] == split and r not in music]
            write_manifest(music, out / f"{split}_ttm.jsonl")
            write_manifest(sounds, out / f"{split}_tta.jsonl")
    with open(out / "ATTRIBUTION.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["audio_id", "label", "split", "package", "version", "original", "licences (package)",
                         "caption", "transforms"])
        writer.writerows(rows)
    summary = {
        "classes": len(counts), "sources": len(sources), "clips": len(records),
        "hours": round(sum(r["duration"] for r in records) / 3600, 2),
        "train_clips": sum(r["split"] == "train" for r in records),
        "heldout_clips": sum(r["split"] == "heldout" for r in records),
        "sources_per_class": counts,
        "prompts": {label: (p[0] if isinstance(p, list) else p) for label, p in phrasings.items()},
        "packages": {p: {"version": versions[p], "licences": licences[p]} for p in versions},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("data/demo_corpus"))
    parser.add_argument("--seconds-per-class", type=float, default=300.0)
    parser.add_argument("--install", action="store_true", help="apt-get install the packages (root)")
    parser.add_argument("--new-classes", action="store_true",
                        help=f"only the classes the demo model never saw ({', '.join(NEW_SFX)}), for fine-tuning")
    args = parser.parse_args()
    if args.install:
        subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *SFX_PACKAGES,
                        *(NEW_SFX_PACKAGES if args.new_classes else TOOL_PACKAGES)], check=True)
    summary = build(args.out.resolve(), args.seconds_per_class, new_classes=args.new_classes)
    print(json.dumps({k: summary[k] for k in ("classes", "sources", "clips", "hours", "train_clips",
                                              "heldout_clips", "sources_per_class")}))


if __name__ == "__main__":
    main()
