"""`dashflow eval`, `dashflow download-weights` and `dashflow train-classifier`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dashflow.eval.weights import OFFICIAL, WEIGHTS_ENV

from dashflow.errors import DashflowError
from dashflow.outputs import check_failures, check_writable


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval", help="score generated audio (FAD, FD, KL, IS, CLAP, Mel/STFT, PESQ, STOI, SI-SDR, DNSMOS, SpkSim, "
                     "in-house classifier)",
        description="Score folders of generated audio against a reference folder (clips paired by "
                    "basename) and write report.json, report.md and report.html.")
    p.add_argument("--generated", action="append", nargs="+", required=True, metavar="DIR",
                   help="generated audio; several folders (runs / checkpoints) give metric-versus-step curves")
    p.add_argument("--reference", metavar="DIR", help="reference audio (needed by all but IS, CLAP and DNSMOS)")
    p.add_argument("--reference-name", help="name of the reference set in the report (default: folder name)")
    p.add_argument("--captions", metavar="JSONL", help="captions for CLAPScore: {audio_id, caption} lines "
                   "(default: prompts from the generated clips' sidecar .json files)")
    p.add_argument("--metrics", default="generation",
                   help="comma list of fad,fd,kl,is,clap,mel,stft,pesq,stoi,sisdr,dnsmos,spksim,top1,fd_inhouse,"
                        "prompt_sep or the sets generation / reconstruction / enhancement / inhouse "
                        "(default: generation)")
    p.add_argument("--out", default="report", metavar="DIR", help="report folder (default: report)")
    p.add_argument("--weights-dir", metavar="DIR", help=f"official weight files (default: ${WEIGHTS_ENV} "
                   "or ~/.cache/dashflow/weights)")
    p.add_argument("--clap-model", metavar="PATH", help="LAION-CLAP .pt checkpoint or Hugging Face CLAP folder "
                   "(default: 630k-audioset-best.pt in the weights folder)")
    p.add_argument("--speaker-weights", metavar="PATH", help="GE2E speaker encoder for SpkSim: resemblyzer's "
                   "pretrained.pt (default: the one in an installed resemblyzer; pip install --no-deps resemblyzer)")
    p.add_argument("--classifier", metavar="DIR", help="in-house classifier folder (dashflow train-classifier): "
                   "adds the inhouse metrics top1, prompt_sep and fd_inhouse (which needs --reference); "
                   "--metrics inhouse scores with it alone")
    p.add_argument("--cache-dir", metavar="DIR", help="feature cache (default: $DASHFLOW_EVAL_CACHE or "
                   "~/.cache/dashflow/eval-features)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the feature cache")
    p.add_argument("--device", default="auto", help="auto (GPU when present), cpu, cuda, cuda:1, ...")
    group = p.add_argument_group("generation settings (when the clips have no sidecar .json)")
    group.add_argument("--steps", type=int)
    group.add_argument("--cfg", type=float)
    group.add_argument("--seed", type=int)
    group.add_argument("--checkpoint")
    opts = p.add_argument_group("metric options")
    opts.add_argument("--clap-crop", choices=("random", "start"), default="random",
                      help="10 s window of longer clips: seeded random crop (as laion-clap) or the start")
    opts.add_argument("--clap-seed", type=int, default=0)
    opts.add_argument("--is-splits", type=int, default=10)
    opts.add_argument("--is-seed", type=int, default=2020)
    opts.add_argument("--mel-preset", choices=("dac", "dac-base"), default="dac")
    opts.add_argument("--align", choices=("reference", "uniflow"), default="reference",
                      help="pairing lengths: fit to the reference (codecs) or UniFlow's SE rule")
    p.set_defaults(handler=run_eval)

    d = subparsers.add_parser("download-weights", help="fetch VGGish, Cnn14 and LAION-CLAP weights (online)",
                              description="Download the official weight files and check their sha256.")
    d.add_argument("names", nargs="*", metavar="NAME",
                   help=f"any of {', '.join(OFFICIAL)} (default: all)")
    d.add_argument("--weights-dir", metavar="DIR",
                   help=f"target folder (default: ${WEIGHTS_ENV} or ~/.cache/dashflow/weights)")
    d.set_defaults(handler=run_download)

    t = subparsers.add_parser(
        "train-classifier", help="train the in-house audio classifier on a labelled manifest",
        description="Train a small log-mel CNN on the labelled clips of a manifest (JSON Lines with label, "
                    "source, split, caption(s)), validate on held-out sources and save config.json + "
                    "model.safetensors for `dashflow eval --classifier`.")
    t.add_argument("--manifest", required=True, nargs="+", metavar="JSONL",
                   help="labelled corpus manifest(s), read as one")
    t.add_argument("--out", required=True, metavar="DIR", help="classifier folder to write")
    t.add_argument("--split", help="train only on clips of this split (e.g. heldout: kept apart from the "
                   "generator's training data)")
    t.add_argument("--epochs", type=int, default=10)
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--val-fraction", type=float, default=0.15, help="share of each label's sources held out "
                   "for validation (0 with --test-manifest: train on every source)")
    t.add_argument("--test-manifest", nargs="+", metavar="JSONL", help="labelled clips it never trains on to measure its "
                   "own top-1 once at the end (e.g. the generator's training split)")
    t.add_argument("--test-split", help="only clips of this split of --test-manifest")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, auto, ...")
    t.set_defaults(handler=run_train_classifier)


def run_eval(args: argparse.Namespace) -> int:
    from dashflow.eval.features import default_cache_dir
    from dashflow.eval.inputs import read_captions
    from dashflow.eval.report import (
        build_report,
        format_metric,
        issue_lines,
        metric_keys,
        write_report,
    )
    from dashflow.eval.suite import (
        EvalOptions,
        Evaluator,
        check_reference,
        parse_metrics,
    )

    check_writable(args.out, folder=True, flag="--out")
    for folder in [f for group in args.generated for f in group] + ([args.reference] if args.reference else []):
        if not Path(folder).is_dir():
            raise DashflowError(f"{folder}: not a folder of audio clips")
    metrics = parse_metrics(args.metrics + (",inhouse" if args.classifier else ""))
    check_reference(metrics, args.reference)
    flags = {"steps": args.steps, "cfg": args.cfg, "seed": args.seed, "checkpoint": args.checkpoint}
    options = EvalOptions(metrics=metrics, weights_dir=args.weights_dir, clap_model=args.clap_model,
                          speaker_weights=args.speaker_weights, classifier=args.classifier,
                          cache_dir=None if args.no_cache else default_cache_dir(args.cache_dir),
                          device=args.device, clap_crop=args.clap_crop, clap_seed=args.clap_seed,
                          is_splits=args.is_splits, is_seed=args.is_seed, mel_preset=args.mel_preset,
                          align=args.align, run_flags={k: v for k, v in flags.items() if v is not None})
    captions = read_captions(args.captions) if args.captions else None
    evaluator = Evaluator(options)
    reference = evaluator.reference(args.reference, args.reference_name)
    runs = [evaluator.run(folder, captions) for group in args.generated for folder in group]
    report = build_report(evaluator.settings(), evaluator.models, reference, runs)
    paths = write_report(report, args.out)
    for run in runs:
        print(f"{run['name']}: " + ", ".join(f"{k} {format_metric(run['metrics'][k])}"
                                             for k in metric_keys(report) if k in run["metrics"]))
    for line in issue_lines(report):
        print(f"warning: {line}", file=sys.stderr)
    print(f"report: {', '.join(str(p) for p in paths)}")
    unreadable = [reference.get("unreadable", {}), *(run["issues"]["unreadable"] for run in runs)]  # named above
    check_failures(sum(map(len, unreadable)), reference["n_files"] + sum(run["n_files"] for run in runs),
                   f"the report in {args.out}")
    return 0


def run_download(args: argparse.Namespace) -> int:
    from dashflow.eval.weights import download

    from dashflow.errors import DashflowError

    unknown = [n for n in args.names if n not in OFFICIAL]
    if unknown:
        raise DashflowError(f"unknown weight file {unknown[0]!r}; choose from {', '.join(OFFICIAL)}")
    for name in args.names or list(OFFICIAL):
        path = download(name, args.weights_dir)
        print(f"{name}: {path}")
    return 0


def run_train_classifier(args: argparse.Namespace) -> int:
    check_writable(args.out, folder=True, flag="--out")
    from dashflow.eval.inhouse import train_classifier

    classifier = train_classifier(args.manifest, args.out, split=args.split, epochs=args.epochs,
                                  batch_size=args.batch_size, lr=args.lr, val_fraction=args.val_fraction,
                                  test_manifest=args.test_manifest, test_split=args.test_split,
                                  seed=args.seed, device=args.device)
    validation = classifier.record["validation"]
    print(f"{len(classifier.labels)} labels; validation top-1 {validation['top1']:.3f} on {validation['n_clips']} "
          f"clips from {validation['n_sources']} held-out sources")
    print(f"classifier: {classifier.folder} (sha256 {classifier.sha256[:16]})")
    return 0
