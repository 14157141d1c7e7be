"""Build the demo corpus: real recordings from Debian packages, captioned, at 16 kHz.

    python recipes/demo/build_corpus.py --out data/demo_corpus [--install]

Writes ``audio/*.wav``, ``manifest.jsonl`` ({"audio_id", "audio", "caption", "duration"}) and
``ATTRIBUTION.csv`` (package, version, original path, licence, caption, transforms). The corpus
stays out of git (reference/offline_data.md §8); this script rebuilds it.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import subprocess
from pathlib import Path

from dashflow.audio import load_audio, save_audio
from dashflow.errors import DashflowError

# (Debian package, folder with its sounds, licence as stated in /usr/share/doc/<pkg>/copyright)
SOURCES = (
    ("qabcs-data", "/usr/share/qabcs/abcs/all/noises", "GPL-3+"),
    ("scratch", "/usr/share/scratch/Media/Sounds", "CC-BY-SA-3.0"),
    ("lugaru-data", "/usr/share/games/lugaru/Sounds", "CC-BY-SA-3.0"),
    ("mate-media-common", "/usr/share/sounds/mate/default/alerts", "GPL-3+"),
)

# file-name concept -> caption; names not listed here are dropped (characters, objects with no
# characteristic sound, ambiguous game effects)
CAPTIONS = {
    "dog": "a dog barking", "dog1": "a dog barking", "dog2": "a dog barking",
    "bark": "a dog barking", "bark2": "a dog barking", "bark3": "a dog barking",
    "barkgrowl": "a dog barking and growling", "growl": "a dog growling", "growl2": "a dog growling",
    "cat": "a cat meowing", "meow": "a cat meowing", "kitten": "a kitten meowing",
    "cow": "a cow mooing", "calf": "a calf mooing", "horse": "a horse neighing",
    "foal": "a foal neighing", "horsegallop": "a horse galloping", "pig": "a pig oinking",
    "sheep": "a sheep bleating", "rooster": "a rooster crowing", "owl": "an owl hooting",
    "eagle-owl": "an owl hooting", "duck": "a duck quacking", "goose": "a goose honking",
    "bird": "a bird chirping", "sparrow": "a sparrow chirping", "crow": "a crow cawing",
    "wolf": "a wolf howling", "wolfhowl": "a wolf howling", "lion": "a lion roaring",
    "tiger": "a tiger roaring", "elephant": "an elephant trumpeting", "frog": "a frog croaking",
    "cricket": "crickets chirping", "crickets": "crickets chirping", "sealion": "a sea lion barking",
    "whale": "a whale singing", "dolphin": "a dolphin clicking", "chimpanzee": "a chimpanzee screaming",
    "bear": "a bear growling", "hyena": "a hyena laughing", "donkey": "a donkey braying",
    "piano": "a piano playing", "grand_piano": "a grand piano playing", "violin": "a violin playing",
    "cello": "a cello playing", "guitar": "an acoustic guitar playing",
    "electric_guitar": "an electric guitar playing", "guitarstrum": "a guitar strum",
    "flute": "a flute playing", "clarinet": "a clarinet playing", "oboe": "an oboe playing",
    "saxophone": "a saxophone playing", "trumpet": "a trumpet playing", "trumpet1": "a trumpet playing",
    "trumpet2": "a trumpet playing", "harp": "a harp playing", "accordion": "an accordion playing",
    "bagpipes": "bagpipes playing", "harmonica": "a harmonica playing", "organ": "an organ playing",
    "xylophone": "a xylophone playing", "drums": "drums playing", "drumset1": "a drum kit groove",
    "drumset2": "a drum kit groove", "bass_drum": "a bass drum beating", "timpani": "timpani rolling",
    "cymbals": "cymbals crashing", "cymbalcrash": "a cymbal crash", "gong": "a gong ringing",
    "maracas": "maracas shaking", "handclap": "hands clapping", "fingersnap": "fingers snapping",
    "train": "a train passing", "tractor": "a tractor engine running",
    "helicopter": "a helicopter flying", "airplane": "an airplane flying over",
    "motorcyclepassing": "a motorcycle passing by", "carpassing": "a car passing by",
    "excavator": "an excavator working", "clock": "a clock ticking", "watch": "a watch ticking",
    "belltoll": "a bell tolling", "doorclose": "a door closing", "doorcreak": "a door creaking",
    "typing": "typing on a keyboard", "waterdrop": "water dripping", "waterrunning": "water running",
    "bubbles": "water bubbling", "fire": "a fire crackling", "zipper": "a zipper being pulled",
    "laugh-female": "a woman laughing", "laugh-male1": "a man laughing", "laugh-male2": "a man laughing",
    "laugh-male3": "a man laughing", "cough-female": "a woman coughing", "cough-male": "a man coughing",
    "sneeze-female": "a woman sneezing", "sneeze-male": "a man sneezing", "babycry": "a baby crying",
    "footsteps-1": "footsteps", "footsteps-2": "footsteps", "scream-female": "a woman screaming",
    "whistle": "a whistle blowing",
}
TRANSFORMS = "decoded, mixed to mono, resampled to 16 kHz with soxr VHQ, 16-bit PCM"


def package_version(package: str) -> str:
    result = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True)
    return result.stdout.strip() or "not installed"


def concept(path: Path) -> str:
    return re.sub(r"\s+", "_", path.stem.lower())


def build(out: Path) -> int:
    """Convert every captioned file of SOURCES into ``out``; returns the number of clips."""
    (out / "audio").mkdir(parents=True, exist_ok=True)
    records, rows = [], []
    for package, folder, licence in SOURCES:
        version = package_version(package)
        for path in sorted(Path(folder).rglob("*")) if Path(folder).is_dir() else []:
            caption = CAPTIONS.get(concept(path))
            if caption is None or path.suffix.lower() not in (".ogg", ".wav", ".mp3"):
                continue
            try:
                wav = load_audio(path, max_seconds=30.0)
            except DashflowError as exc:
                print(f"skipped: {exc}")
                continue
            audio_id = f"{package.split('-')[0]}_{concept(path)}"
            save_audio(out / "audio" / f"{audio_id}.wav", wav)
            records.append({"audio_id": audio_id, "audio": f"audio/{audio_id}.wav",
                            "caption": caption, "duration": round(wav.numel() / 16000, 3)})
            rows.append([audio_id, package, version, str(path), licence, caption, TRANSFORMS])
    (out / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    with open(out / "ATTRIBUTION.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["audio_id", "package", "version", "original_path", "licence", "caption",
                         "transforms"])
        writer.writerows(rows)
    return len(records)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("data/demo_corpus"))
    parser.add_argument("--install", action="store_true", help="apt-get install the packages (root)")
    args = parser.parse_args()
    if args.install:
        subprocess.run(["apt-get", "install", "-y", "-q", *(p for p, _, _ in SOURCES)], check=True)
    count = build(args.out)
    print(f"{count} clips -> {args.out / 'manifest.jsonl'}")


if __name__ == "__main__":
    main()
