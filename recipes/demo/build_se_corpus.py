"""Build a small speech-enhancement corpus offline: TTS speakers, real noise recordings, a split.

    python recipes/demo/build_se_corpus.py --out data/se_corpus [--install] [--sentences-per-speaker 40]

Clean speech: four flite voices and six espeak-ng variants (16 kHz), each speaker reading its own
phrases of the licence texts in /usr/share/common-licenses (on every Debian machine); after the
split, twelve more voices (flite at other pitches, espeak-ng in other accents) read training
phrases: ten for training, two for the validation set. Noise: real recordings from Debian
packages, mono 16 kHz, silent or short ones dropped; the training split
also gets synthetic noises (white / pink / brown, 50 and 60 Hz hum, babble of training speakers),
so the model sees stationary noise; the test set keeps real recordings only.
Writes ``speech/<speaker>/*.wav``, ``noise/*.wav``, ``clean.jsonl`` (with ``speaker`` and
``text``), ``noise.jsonl`` (with ``type`` and ``source``), the speaker- and noise-disjoint split
``{train,test}_{clean,noise}.jsonl``, a fixed test set ``test/{noisy,clean}/*.wav`` +
``test/manifest.jsonl`` (SNR -5..20 dB, seed 0), a validation set ``val/`` (the validation voices,
``val_clean.jsonl``, in the training split's real noise, seed 1) and ``ATTRIBUTION.csv``. The
corpus stays out of git; this script rebuilds it (it replaces its own speech/, noise/, test/ and
val/ folders under --out).
"""

from __future__ import annotations

import argparse
import csv
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from dashflow.audio import SAMPLE_RATE, load_audio, save_audio
from dashflow.demo_corpus import (
    ENGINES,
    SPEAKERS,
    TEXT_DIR,
    TRANSFORMS,
    babble,
    coloured_noise,
    licence_sentences,
    mains_hum,
    package_version,
    synthesize,
)
from dashflow.errors import DashflowError
from dashflow.manifests import read_manifest, write_manifest
from dashflow.mixing import MixingConfig, write_mixed_set
from dashflow.prepare import SPLIT_NAMES, split_disjoint, split_summary

TEST_SPEAKERS = ("awb", "espeak_f4")  # one flite and one espeak voice never seen in training
# More voices, added after the split (the test set is unchanged): flite voices at another mean pitch
# (Hz) and espeak-ng variants in other accents (no f4, a test voice), reading training phrases. A
# model trained on 8 voices lost SI-SDR on the test voices above 10 dB SNR while it gained on
# training voices mixed with the test noises. Two of them are kept out of training: the voices
# of the validation set, for choosing between models without the test set.
EXTRA_SPEAKERS = {
    "slt_f0_130": ("flite", "slt", 130.0), "slt_f0_220": ("flite", "slt", 220.0),
    "kal16_f0_120": ("flite", "kal16", 120.0), "kal16_f0_150": ("flite", "kal16", 150.0),
    "espeak_scot_m2": ("espeak-ng", "en-gb-scotland+m2", None), "espeak_029_f1": ("espeak-ng", "en-029+f1", None),
    "espeak_nyc_m5": ("espeak-ng", "en-us-nyc+m5", None), "espeak_lanc_f3": ("espeak-ng", "en-gb-x-gbclan+f3", None),
    "espeak_wmids_m6": ("espeak-ng", "en-gb-x-gbcwmd+m6", None), "espeak_m7": ("espeak-ng", "en+m7", None),
    "espeak_us_f5": ("espeak-ng", "en-us+f5", None), "espeak_rp_f1": ("espeak-ng", "en-gb-x-rp+f1", None),
}
VAL_SPEAKERS = ("kal16_f0_150", "espeak_wmids_m6")
EXTRA_PER_SPEAKER = 30
# (Debian package, file under /usr/share, noise type, licence from /usr/share/doc/<pkg>/copyright)
SONIC, ETW, S3D = "sonic-pi/samples", "games/etw/crowd", "games/scorched3d/data/globalmods"
LINCITY, FLARE = "games/lincity-ng/sounds", "games/flare/mods/fantasycore/soundfx/environment"
MINETEST, SCRATCH = "games/minetest/games/minetest_game/mods", "scratch/Media/Sounds"
NOISES = (
    ("sonic-pi-samples", f"{SONIC}/vinyl_hiss.flac", "hiss", "CC0"),
    ("sonic-pi-samples", f"{SONIC}/ambi_glass_hum.flac", "hum", "CC0"),
    ("sonic-pi-samples", f"{SONIC}/ambi_haunted_hum.flac", "hum", "CC0"),
    ("sonic-pi-samples", f"{SONIC}/ambi_drone.flac", "hum", "CC0"),
    ("alsa-utils", "sounds/alsa/Noise.wav", "white noise", "GPL-2"),
    *(("etw-data", f"{ETW}/crowd{n}.wav", "crowd", "GPL-2+") for n in ("01", "04", "05", "09", "14")),
    ("lmms-common", "lmms/samples/misc/raving_crowd01.ogg", "crowd", "GPL-2+"),
    ("lmms-common", "lmms/samples/misc/applause01.ogg", "applause", "GPL-2+"),
    ("tuxfootball", "games/tuxfootball/sound/crowdboo.wav", "crowd", "GPL-2+"),
    ("tuxfootball", "games/tuxfootball/sound/crowdcheer.wav", "crowd", "GPL-2+"),
    ("scorched3d-data", f"{S3D}/apoc/data/wav/misc/cheeringloop.wav", "crowd", "CC-BY-SA-3"),
    ("scratch", f"{SCRATCH}/Human/PartyNoise.wav", "babble", "CC-BY-SA-3.0"),
    ("lincity-ng-data", f"{LINCITY}/MarketFull1.wav", "babble", "GPL-2+"),
    ("lincity-ng-data", f"{LINCITY}/SportsCroud1.wav", "crowd", "GPL-2+"),
    ("scorched3d-data", f"{S3D}/apoc/data/wav/misc/citysounds.wav", "city", "CC-BY-SA-3"),
    ("scorched3d-data", f"{S3D}/apoc/data/wav/misc/policecar.wav", "siren", "CC-BY-SA-3"),
    ("micropolis-data", "games/micropolis/res/sounds/heavytraffic.wav", "traffic", "GPL-3+"),
    ("lincity-ng-data", f"{LINCITY}/TraficHigh1.wav", "traffic", "GPL-2+"),
    ("lincity-ng-data", f"{LINCITY}/RailTrain1.wav", "train", "GPL-2+"),
    ("scratch", f"{SCRATCH}/Effects/CarPassing.wav", "traffic", "CC-BY-SA-3.0"),
    ("scratch", f"{SCRATCH}/Effects/MotorcyclePassing.wav", "traffic", "CC-BY-SA-3.0"),
    ("scorched3d-data", f"{S3D}/apoc/data/wav/misc/factoryloop1.wav", "machine", "CC-BY-SA-3"),
    ("scorched3d-data", f"{S3D}/none/data/wav/movement/tankmove.wav", "engine", "GPL-2+"),
    ("lincity-ng-data", f"{LINCITY}/IndustryHigh1.wav", "machine", "GPL-2+"),
    ("lincity-ng-data", f"{LINCITY}/CoalMine1.wav", "machine", "GPL-2+"),
    ("lincity-ng-data", f"{LINCITY}/Mill1.wav", "machine", "GPL-2+"),
    ("trophy-data", "games/trophy/sounds/engine.wav", "engine", "GPL-2"),
    ("minetest-data", f"{MINETEST}/default/sounds/default_furnace_active.ogg", "fire", "CC-BY-SA-3.0"),
    ("flare-game", f"{FLARE}/anvil_loop.ogg", "impacts", "CC-BY-SA-3.0+"),
    ("scratch", f"{SCRATCH}/Effects/SewingMachine.mp3", "machine", "CC-BY-SA-3.0"),
    ("scorched3d-data", f"{S3D}/apoc/data/wav/misc/helicopter.wav", "aircraft", "CC-BY-SA-3"),
    ("scorched3d-data", f"{S3D}/apoc/data/wav/misc/cessna.wav", "aircraft", "CC-BY-SA-3"),
    ("scorched3d-data", f"{S3D}/none/data/wav/misc/jet.wav", "aircraft", "GPL-2+"),
    ("flare-game", "games/flare/mods/empyrean_campaign/soundfx/environment/rain.ogg", "rain",
     "CC-BY-SA-3.0+"),
    ("scorched3d-data", f"{S3D}/none/data/wav/misc/rain.wav", "rain", "GPL-2+"),
    ("flare-game", f"{FLARE}/wind_loop.ogg", "wind", "CC-BY-SA-3.0+"),
    ("flare-game", f"{FLARE}/cave_wind_loop.ogg", "wind", "CC-BY-SA-3.0+"),
    ("lugaru-data", "games/lugaru/Sounds/Wind.ogg", "wind", "CC-BY-SA-3.0"),
    ("lugaru-data", "games/lugaru/Sounds/DesertAmbient.ogg", "wind", "CC-BY-SA-3.0"),
    ("flare-game", f"{FLARE}/river_loop.ogg", "water", "CC-BY-SA-3.0+"),
    ("flare-game", f"{FLARE}/cave_droplets_loop.ogg", "water", "CC-BY-SA-3.0+"),
    ("minetest-data", f"{MINETEST}/env_sounds/sounds/env_sounds_water.1.ogg", "water",
     "CC-BY-SA-3.0"),
    ("scorched3d-data", f"{S3D}/none/data/wav/misc/oceanwaves.wav", "water", "GPL-2+"),
    ("lincity-ng-data", f"{LINCITY}/Water1.wav", "water", "GPL-2+"),
    ("lugaru-data", "games/lugaru/Sounds/Fire.ogg", "fire", "CC-BY-SA-3.0"),
    ("minetest-data", f"{MINETEST}/fire/sounds/fire_large.ogg", "fire", "CC-BY-SA-3.0"),
    ("flare-game", f"{FLARE}/bird_twitter_loop.ogg", "birds", "CC-BY-SA-3.0+"),
    ("scorched3d-data", f"{S3D}/none/data/wav/misc/birds1.wav", "birds", "GPL-2+"),
    ("scorched3d-data", f"{S3D}/none/data/wav/misc/frogs.wav", "animals", "GPL-2+"),
    ("scratch", f"{SCRATCH}/Animal/Crickets.wav", "insects", "CC-BY-SA-3.0"),
    ("scorched3d-data", f"{S3D}/none/data/music/mix3_loop1.ogg", "music", "GPL-2+"),
    ("lugaru-data", "games/lugaru/Sounds/Music1Grass.ogg", "music", "CC-BY-SA-3.0"),
    ("tuxfootball", "games/tuxfootball/sound/ingame.ogg", "music", "GPL-2+"),
)
# Training-only synthetic noises (the test set keeps real recordings): power spectrum ~ f^-exponent
# (white 0, pink 1, brown 2), mains hum with its harmonics, and babble of training speakers.
COLOURS = {"white": 0.0, "pink": 1.0, "brown": 2.0}
HUMS = (50.0, 60.0)         # Hz
BABBLES = 3
SYNTHETIC_SECONDS = 20.0
MAX_NOISE_SECONDS = 60.0   # longer recordings keep their first minute
MIN_NOISE_SECONDS = 1.0
MIN_NOISE_DBFS = -65.0     # quieter (RMS) recordings are dropped as (near) silent
EDGE_SILENCE = 1e-4        # leading/trailing samples below this (-80 dBFS) are trimmed


def build_speech(out: Path, per_speaker: int) -> tuple[list[dict], list[list[str]]]:
    """Every speaker reads its own ``per_speaker`` phrases; returns records and attribution rows."""
    sentences = licence_sentences()
    if len(sentences) < per_speaker * len(SPEAKERS):
        raise DashflowError(f"{TEXT_DIR} gives {len(sentences)} phrases, fewer than "
                            f"{per_speaker} x {len(SPEAKERS)} speakers")
    jobs = [(speaker, engine, voice, None, f"{index:03d}", *sentences[number * per_speaker + index])
            for number, (speaker, (engine, voice)) in enumerate(SPEAKERS.items()) for index in range(per_speaker)]
    return speak(out, jobs)


def build_extra_speech(out: Path, train_speech: list[dict], per_speaker: int,
                       seed: int = 0) -> tuple[list[dict], list[list[str]]]:
    """EXTRA_SPEAKERS, each reading ``per_speaker`` phrases drawn from those of ``train_speech``."""
    rng, jobs = np.random.default_rng(seed), []
    for speaker, (engine, voice, pitch_hz) in EXTRA_SPEAKERS.items():
        for index, row in enumerate(rng.choice(len(train_speech), per_speaker, replace=False)):
            phrase = train_speech[row]
            jobs.append((speaker, engine, voice, pitch_hz, f"{index:03d}",
                         f"the phrase of {phrase['audio_id']}", phrase["text"]))
    return speak(out, jobs)


def speak(out: Path, jobs: list[tuple]) -> tuple[list[dict], list[list[str]]]:
    """Synthesise (speaker, engine, voice, pitch_hz, name, source, text) jobs into
    ``out/speech/<speaker>/<name>.wav``; returns records and attribution rows."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        durations = list(pool.map(lambda job: synthesize(
            job[1], job[2], job[6], out / "speech" / job[0] / f"{job[4]}.wav", pitch_hz=job[3]), jobs))
    versions = {engine: package_version(package) for engine, (package, _) in ENGINES.items()}
    records, rows = [], []
    for (speaker, engine, voice, pitch_hz, name, source, text), duration in zip(jobs, durations):
        audio_id = f"{speaker}/{name}"
        records.append({"audio_id": audio_id, "audio": str(out / "speech" / speaker / f"{name}.wav"),
                        "speaker": speaker, "text": text, "duration": duration})
        package, licence = ENGINES[engine]
        pitch = "" if pitch_hz is None else f" at a mean pitch of {pitch_hz:g} Hz"
        rows.append([audio_id, "speech", package, versions[engine], f"{engine} voice {voice}{pitch} reading {source}",
                     f"voice: {licence}; text: verbatim copying permitted", "synthesised; " + TRANSFORMS])
    return records, rows


def build_noise(out: Path) -> tuple[list[dict], list[list[str]]]:
    """Convert NOISES into ``out/noise``; missing, short or silent recordings are reported."""
    records, rows = [], []
    for package, relative, kind, licence in NOISES:
        path = Path("/usr/share") / relative
        audio_id = f"{package.split('-')[0]}_{re.sub(r'[^a-z0-9]+', '_', path.stem.lower())}"
        try:
            wav = load_audio(path, SAMPLE_RATE, max_seconds=600.0)
        except DashflowError as exc:
            print(f"skipped {audio_id}: {exc} (install {package})")
            continue
        loud = np.flatnonzero(wav.abs().numpy() > EDGE_SILENCE)
        wav = wav[loud[0]:loud[-1] + 1] if loud.size else wav[:0]
        wav = wav[:round(MAX_NOISE_SECONDS * SAMPLE_RATE)]
        seconds = wav.numel() / SAMPLE_RATE
        level = 10 * np.log10(float(wav.square().mean()) + 1e-20) if wav.numel() else -200.0
        if seconds < MIN_NOISE_SECONDS or level < MIN_NOISE_DBFS:
            print(f"skipped {audio_id}: {seconds:.2f} s at {level:.0f} dBFS is too short or silent")
            continue
        save_audio(out / "noise" / f"{audio_id}.wav", wav)
        records.append({"audio_id": audio_id, "audio": str(out / "noise" / f"{audio_id}.wav"),
                        "type": kind, "source": package, "duration": round(seconds, 3)})
        transforms = TRANSFORMS + ", edge silence trimmed" + (
            f", first {MAX_NOISE_SECONDS:.0f} s" if seconds >= MAX_NOISE_SECONDS else "")
        rows.append([audio_id, "noise", package, package_version(package), str(path), licence,
                     transforms])
    return records, rows


def build_synthetic_noise(out: Path, train_speech: list[dict], seed: int = 0) -> tuple[list[dict], list[list[str]]]:
    """Write the synthetic training noises into ``out/noise``: records and attribution rows."""
    rng, samples = np.random.default_rng(seed), round(SYNTHETIC_SECONDS * SAMPLE_RATE)
    noises = [(f"synthetic_{name}", f"{name} noise", coloured_noise(exponent, samples, rng), f"{name} noise")
              for name, exponent in COLOURS.items()]
    noises += [(f"synthetic_hum_{hz:.0f}hz", "hum", mains_hum(hz, samples, rng), f"{hz:.0f} Hz mains hum")
               for hz in HUMS]
    for number in range(BABBLES):
        wav, used = babble(train_speech, samples, rng)
        noises.append((f"synthetic_babble{number}", "babble", wav, "babble of " + " + ".join(used)))
    records, rows = [], []
    for audio_id, kind, wav, what in noises:
        path = out / "noise" / f"{audio_id}.wav"
        save_audio(path, 0.25 * wav / np.abs(wav).max())
        records.append({"audio_id": audio_id, "audio": str(path), "type": kind, "source": "synthetic",
                        "duration": SYNTHETIC_SECONDS})
        rows.append([audio_id, "noise", "synthetic", "", f"{what}, seed {seed}",
                     "as the speech it sums" if kind == "babble" else "generated (no source)",
                     "peak -12 dBFS"])
    return records, rows


def build(out: Path, per_speaker: int) -> dict[str, int | float]:
    """Build the whole corpus under ``out``; returns its sizes."""
    for folder in ("speech", "noise", "test", "val"):
        shutil.rmtree(out / folder, ignore_errors=True)
    speech, speech_rows = build_speech(out, per_speaker)
    noise, noise_rows = build_noise(out)
    write_manifest(speech, out / "clean.jsonl")
    write_manifest(noise, out / "noise.jsonl")
    parts = split_disjoint(read_manifest(out / "clean.jsonl"), read_manifest(out / "noise.jsonl"),
                           test_fraction=0.25, seed=0, test_speakers=TEST_SPEAKERS)
    real_train_noise = parts["train_noise"]
    synthetic, synthetic_rows = build_synthetic_noise(out, parts["train_clean"])
    parts["train_noise"] = real_train_noise + synthetic
    extra, extra_rows = build_extra_speech(out, parts["train_clean"], EXTRA_PER_SPEAKER)
    val_clean = [r for r in extra if r["speaker"] in VAL_SPEAKERS]
    parts["train_clean"] = parts["train_clean"] + [r for r in extra if r["speaker"] not in VAL_SPEAKERS]
    for name in SPLIT_NAMES:
        write_manifest(parts[name], out / f"{name}.jsonl")
    write_manifest(val_clean, out / "val_clean.jsonl")
    print("\n".join(split_summary(parts)))
    snr = MixingConfig(snr_db=[-5.0, 20.0])
    write_mixed_set(parts["test_clean"], parts["test_noise"], out / "test", snr, seed=0)
    write_mixed_set(val_clean, real_train_noise, out / "val", snr, seed=1)
    with open(out / "ATTRIBUTION.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["audio_id", "kind", "package", "version", "original", "licence",
                         "transforms"])
        writer.writerows(speech_rows + extra_rows + noise_rows + synthetic_rows)
    return {"speakers": len(SPEAKERS) + len(EXTRA_SPEAKERS), "utterances": len(speech) + len(extra),
            "speech_minutes": round(sum(r["duration"] for r in speech + extra) / 60, 1),
            "noise_files": len(noise), "noise_minutes": round(sum(r["duration"] for r in noise) / 60, 1),
            "train_utterances": len(parts["train_clean"]), "val_utterances": len(val_clean),
            "test_utterances": len(parts["test_clean"]),
            "train_noise": len(parts["train_noise"]), "synthetic_noise": len(synthetic),
            "test_noise": len(parts["test_noise"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("data/se_corpus"))
    parser.add_argument("--sentences-per-speaker", type=int, default=40)
    parser.add_argument("--install", action="store_true", help="apt-get install the packages (root)")
    args = parser.parse_args()
    if args.install:
        packages = sorted({"flite", "espeak-ng", *(p for p, _, _, _ in NOISES)})
        subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages],
                       check=True)
    sizes = build(args.out.resolve(), args.sentences_per_speaker)
    print(" ".join(f"{key}={value}" for key, value in sizes.items()))


if __name__ == "__main__":
    main()
