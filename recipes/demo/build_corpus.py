"""Build the demo text-to-audio corpus: real recordings from Debian packages, MIDI music, TTS speech.

    python recipes/demo/build_corpus.py --out data/demo_corpus [--install] [--seconds-per-class 300]

Classes (reference/offline_data.md): 14 sound-event classes with at least 8 distinct source
recordings each, 5 music styles rendered from MMA grooves with fluidsynth and the TimGM6mb
General MIDI soundfont (each song a source), and speech (flite / espeak-ng voices, each voice a
source). Clips are 3-6 s of natural event length: short recordings are repeated with random
gaps (a dog barks several times), long ones are cropped; each clip is augmented (gain,
+-2 semitones, sometimes a synthetic room or a quiet noise floor).

The split is by source recording, deterministic: about 30 % of the sources of every class (at
least 3) are ``heldout`` (for the in-house classifier), the rest ``train`` (tokenizer + DiT).
Writes ``audio/*.wav`` (16 kHz mono), ``manifest.jsonl`` ({"audio_id", "audio", "caption",
"captions", "label", "source", "split", "duration"}), ``train.jsonl``, ``heldout.jsonl``,
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
    SPEAKERS,
    TRANSFORMS,
    augment,
    event_clip,
    licence_sentences,
    package_licences,
    package_version,
    split_by_source,
    synthesize,
    trim,
)
from dashflow.errors import DashflowError
from dashflow.manifests import write_manifest

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
    "door": (["a door opening and closing", "a door slamming", "a creaking door", "a door closing"],
             r"/(doorclose|doorcreak|perc_door|doors_\w+_(open|close))\.(ogg|wav|mp3|flac)$"),
    "thunder": (["thunder rumbling", "a thunderstorm", "thunder and lightning", "a loud thunderclap"],
                r"/(thunder\d?|lightning|lightningbolt)\.(ogg|wav)$"),
    "gunshot": (["gunshots", "a gun firing", "gunfire", "a shotgun blast"],
                r"/(machinegun|shotgun|tripleshot|gun|minigun|shotgunfire|gunshot|shot)\.(ogg|wav)$"),
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
    "water": (["water running", "water splashing", "flowing water", "water bubbling"],
              r"/(bubbles|waterdrop|waterrunning|splash|env_sounds_water\.\d|oceanwaves)\.(ogg|wav|mp3)$"),
    "aircraft": (["an airplane flying overhead", "a jet flying by", "an aircraft engine", "a helicopter flying"],
                 r"/(f16_\d|f18_\d|jet|t38|cessna|apache_1|helicopter|airplane)\.(ogg|wav)$"),
}
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
SPEECH = ["a person speaking", "someone talking", "a voice reading a sentence", "speech"]
PROGRESSIONS = (("I", "vi", "ii", "V"), ("I", "IV", "V", "I"), ("ii", "V", "I", "I"), ("I", "vi", "IV", "V"),
                ("I", "V", "vi", "IV"), ("vi", "IV", "I", "V"))
KEYS = ("C", "D", "Eb", "F", "G", "A", "Bb")
SONGS_PER_STYLE = 12
CLIP_SECONDS = (3.0, 6.0)


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


def sfx_sources() -> list[Source]:
    sources, taken = [], set()
    for package in SFX_PACKAGES:
        for path in installed_files(package):
            for label, (_, pattern) in SFX.items():
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


def chord(degree: str, key: str) -> str:
    """MMA chord name of a Roman-numeral degree in a major key (vi / ii minor sevenths, V dominant)."""
    names = ("C", "Db", "D", "Eb", "E", "F", "Gb", "G", "Ab", "A", "Bb", "B")
    steps = {"I": 0, "ii": 2, "IV": 5, "V": 7, "vi": 9}[degree]
    root = names[(names.index(key) + steps) % 12]
    return root + {"I": "", "ii": "m7", "IV": "", "V": "7", "vi": "m"}[degree]


def music_sources(work: Path, rng: np.random.Generator) -> tuple[list[Source], dict[str, str]]:
    """Render SONGS_PER_STYLE songs per MUSIC style; returns sources and a caption per source."""
    sources, captions = [], {}
    for label, (_, grooves, instruments) in MUSIC.items():
        for number in range(SONGS_PER_STYLE):
            groove, key = grooves[number % len(grooves)], KEYS[int(rng.integers(len(KEYS)))]
            tempo = int(rng.integers(90, 150)) if label != "waltz" else int(rng.integers(120, 180))
            progression = PROGRESSIONS[int(rng.integers(len(PROGRESSIONS)))]
            bars = [chord(d, key) for d in progression] * 3
            song = f"Tempo {tempo}\nGroove {groove}\nKeySig {key}\n" + "".join(
                f"{i + 1} {c}\n" for i, c in enumerate(bars))
            mma, mid, wav_path = work / "song.mma", work / "song.mid", work / "song.wav"
            mma.write_text(song)
            subprocess.run(["mma", str(mma), "-f", str(mid)], check=True, capture_output=True)
            subprocess.run(["fluidsynth", "-ni", "-q", "-F", str(wav_path), "-r", str(SAMPLE_RATE),
                            str(SOUNDFONT), str(mid)], check=True, capture_output=True)
            wav = trim(load_audio(wav_path, SAMPLE_RATE).numpy())
            source_id = f"mma_{label.replace(' ', '_')}_{number:02d}"
            sources.append(Source(label, source_id, "mma", f"MMA groove {groove}, {tempo} BPM, {key} major, "
                                  f"chords {'-'.join(bars[:4])}, rendered with fluidsynth + TimGM6mb", [wav]))
            captions[source_id] = (f"{MUSIC[label][0][0]}, {groove} groove at {tempo} BPM in {key} major, "
                                   f"{instruments}")
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


def build(out: Path, seconds_per_class: float, seed: int = 0) -> dict:
    """Build the corpus under ``out`` (its audio/ folder is replaced); returns summary.json's dict."""
    rng = np.random.default_rng(seed)
    shutil.rmtree(out / "audio", ignore_errors=True)
    (out / "audio").mkdir(parents=True)
    with tempfile.TemporaryDirectory() as tmp:
        music, music_captions = music_sources(Path(tmp), rng)
        sources = sfx_sources() + music + speech_sources(Path(tmp), per_voice=12)
    phrasings = {**{k: v[0] for k, v in SFX.items()}, **{k: v[0] for k, v in MUSIC.items()}, "speech": SPEECH}
    counts = {label: sum(s.label == label for s in sources) for label in phrasings}
    thin = [f"{label} ({n})" for label, n in counts.items() if n < 8]
    if thin:
        raise DashflowError(f"fewer than 8 source recordings for {', '.join(thin)}: install the packages "
                            f"(--install)")
    heldout = split_by_source([(s.label, s.source_id) for s in sources])
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
            wav, transforms = augment(wav, rng, semitones=0.0 if source.label in MUSIC else 2.0)
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
    args = parser.parse_args()
    if args.install:
        subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *SFX_PACKAGES,
                        *TOOL_PACKAGES], check=True)
    summary = build(args.out.resolve(), args.seconds_per_class)
    print(json.dumps({k: summary[k] for k in ("classes", "sources", "clips", "hours", "train_clips",
                                              "heldout_clips", "sources_per_class")}))


if __name__ == "__main__":
    main()
