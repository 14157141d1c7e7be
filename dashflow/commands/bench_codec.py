"""`dashflow bench-codec`: one table judging latent spaces the way the tokenizer papers do.

    dashflow bench-codec --encoder demo=generation/demo/pipeline/tokenizer --encoder logmel \
        --task data/probe_tasks/keywords.jsonl --audio clips.jsonl --speech speech.jsonl --out runs/bench

Per encoder: latent dim and rate, parameters; reconstruction through the codec's own decoder
(Mel-16k and STFT-16k distances and SI-SDR on ``--audio`` clips, wide-band PESQ and STOI on
``--speech`` clips, all at 16 kHz) with the encode + decode real-time factor; probe test accuracy
per task and the mean (``dashflow probe``'s protocol). Encoders without a decoder (a codec part,
the log-mel baseline, X-ARES encoders) get probe columns only. Writes ``codec_bench.json``,
``codec_bench.md`` and ``codec_bench.html``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from dashflow.commands.probe import add_probe_arguments, check_probe_arguments, probe_encoder, probe_settings, task_summary
from dashflow.errors import DashflowError
from dashflow.outputs import check_writable


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("bench-codec", help="reconstruction + probes + speed of latent codecs, one table",
                                   description="Compare latent spaces: reconstruction, understanding probes, speed.")
    parser.add_argument("--encoder", action="append", required=True,
                        help="[LABEL=]SOURCE[@PART] as for `dashflow probe`; repeatable")
    parser.add_argument("--audio", default=None, help="manifest of clips to reconstruct (spectral distances, SI-SDR)")
    parser.add_argument("--speech", default=None, help="manifest of speech clips to reconstruct (PESQ, STOI)")
    parser.add_argument("--untrained", action="append", default=[], metavar="LABEL",
                        help="mark this encoder's row as untrained (random weights); repeatable")
    parser.add_argument("--out", required=True, help="output folder")
    add_probe_arguments(parser)
    parser.set_defaults(handler=run)


def reconstruction_scores(codec, records: list[dict], speech: bool) -> dict[str, float]:
    """Mean scores of ``codec``'s reconstructions of ``records`` at 16 kHz, and its encode + decode RTF."""
    import numpy as np

    from dashflow.audio import load_audio, resample
    from dashflow.codecs import reconstruct
    from dashflow.eval.enhancement import si_sdr, speech_scores
    from dashflow.eval.reconstruction import mel_distance, stft_distance

    totals: dict[str, list[float]] = {}
    seconds = busy = 0.0
    for record in records:
        reference = load_audio(record["audio"], 16000).numpy()
        wav = load_audio(record["audio"], codec.sample_rate)
        start = time.perf_counter()
        recon = reconstruct(codec, wav).numpy()
        busy += time.perf_counter() - start
        seconds += len(wav) / codec.sample_rate
        estimate = resample(recon, codec.sample_rate, 16000)[:len(reference)]
        estimate = np.pad(estimate, (0, len(reference) - len(estimate)))
        scores = speech_scores(reference, estimate) if speech else {
            "mel_distance": mel_distance(estimate, reference), "stft_distance": stft_distance(estimate, reference),
            "si_sdr": si_sdr(reference, estimate)}
        for key, value in scores.items():
            totals.setdefault(key, []).append(value)
    return {**{k: float(np.mean(v)) for k, v in totals.items()}, "rtf": busy / seconds}


def run(args: argparse.Namespace) -> int:
    check_probe_arguments(args)
    out = Path(args.out)
    check_writable(out, folder=True, flag="--out")
    from dashflow.cli import quiet_libraries
    from dashflow.device import resolve_device
    from dashflow.eval.codec_report import write_codec_report
    from dashflow.eval.probes import majority_accuracy, read_probe_task
    from dashflow.features import CodecFeatures, encoder_from_spec, feature_id, parameter_count
    from dashflow.manifests import read_manifest

    tasks = [read_probe_task(path) for path in args.task]
    clips = {kind: read_manifest(path) for kind, path in (("audio", args.audio), ("speech", args.speech)) if path}
    device = resolve_device(args.device)
    quiet_libraries()
    rows = {}
    for spec in args.encoder:
        entry = encoder_from_spec(spec, device)
        if entry.label in rows:
            raise DashflowError(f"--encoder {spec!r}: the label {entry.label!r} is used twice; name it LABEL=...")
        encoder = entry.encoder
        row = {"source": spec, "feature_id": feature_id(encoder), "dim": encoder.output_dim,
               "rate_hz": 1000.0 / encoder.hop_size_in_ms, "parameters": parameter_count(encoder),
               "untrained": entry.label in args.untrained, "reconstruction": {}}
        if isinstance(encoder, CodecFeatures) and encoder.part == "latents":
            for kind, records in clips.items():
                row["reconstruction"][kind] = reconstruction_scores(encoder.codec, records, kind == "speech")
        row["probes"] = probe_encoder(encoder, tasks, args)
        rows[entry.label] = row
        del entry, encoder
    results = {"settings": {**probe_settings(args), "audio": args.audio, "speech": args.speech,
                            "device": str(device)},
               "tasks": task_summary(tasks, majority_accuracy), "encoders": rows}
    for path in write_codec_report(results, out):
        print(f"wrote {path}")
    return 0
