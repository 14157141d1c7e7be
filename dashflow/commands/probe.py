"""`dashflow probe`: how much a frozen encoder's features understand, on labelled probe tasks.

    dashflow probe --task data/probe_tasks/keywords.jsonl --encoder demo=generation/demo/pipeline/tokenizer \
        --encoder logmel --out runs/probe

Each encoder (``[LABEL=]SOURCE[@PART]``, see :mod:`dashflow.features`) encodes every clip once
(cached by its weights hash under ``--cache``); a probe is trained per task with the same protocol
for every encoder (:mod:`dashflow.eval.probes`). Writes ``probe.json`` and ``probe.md``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from dashflow.errors import DashflowError
from dashflow.outputs import atomic_path, check_writable


def add_probe_arguments(parser: argparse.ArgumentParser) -> None:
    """The probe protocol's settings (shared with ``bench-codec``)."""
    parser.add_argument("--task", action="append", required=True, help="probe-task manifest (.jsonl); repeatable")
    parser.add_argument("--head", choices=("linear", "mlp"), default="linear",
                        help="linear = X-ARES's LayerNorm + Linear (default); mlp adds a hidden layer")
    parser.add_argument("--pooling", choices=("mean", "frame"), default="mean",
                        help="mean over valid frames (default), or per-frame logits averaged per clip")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--knn", action="store_true", help="also X-ARES's k-NN score (k = 10)")
    parser.add_argument("--cache", default="runs/feature_cache", help="feature cache folder ('' = none)")
    parser.add_argument("--device", default=None, help="torch device for the encoders (default: cuda if available)")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("probe", help="probe frozen encoder features on labelled tasks",
                                   description="Train X-ARES-style probes on frozen features of each encoder.")
    parser.add_argument("--encoder", action="append", required=True,
                        help="[LABEL=]SOURCE[@PART]: a codec folder or hub id (PART: latents, semantic, "
                             "acoustic, ...), logmel[:HOP_MS], or xares:FILE.py; repeatable")
    parser.add_argument("--out", required=True, help="output folder (probe.json, probe.md)")
    add_probe_arguments(parser)
    parser.set_defaults(handler=run)


def probe_encoder(encoder, tasks, args: argparse.Namespace, progress: bool = True) -> dict:
    """Scores of one encoder on every task: {task: {"test", "val", "best_epoch", "knn"?, "seconds"}}."""
    from dashflow.eval.probes import knn_accuracy, train_probe
    from dashflow.features import cached_features

    scores = {}
    for task in tasks:
        start = time.perf_counter()
        splits = {}
        for split, records in task.splits.items():
            features, mask = cached_features(encoder, records, args.cache or None, progress=progress)
            splits[split] = (features, mask, task.labels(split))
        result = train_probe(splits["train"], splits["val"], splits["test"], len(task.classes), head=args.head,
                             pooling=args.pooling, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                             seed=args.seed)
        scores[task.name] = {"test": result.test, "val": result.val, "best_epoch": result.best_epoch}
        if args.knn:
            scores[task.name]["knn"] = knn_accuracy(splits["train"], splits["test"], len(task.classes))
        scores[task.name]["seconds"] = time.perf_counter() - start
    return scores


def check_probe_arguments(args: argparse.Namespace) -> None:
    if args.epochs < 1 or args.batch_size < 1 or not args.lr > 0:
        raise DashflowError("--epochs and --batch-size must be at least 1 and --lr positive")


def run(args: argparse.Namespace) -> int:
    check_probe_arguments(args)
    out = Path(args.out)
    check_writable(out, folder=True, flag="--out")
    from dashflow.cli import quiet_libraries
    from dashflow.device import resolve_device
    from dashflow.eval.probes import majority_accuracy, read_probe_task
    from dashflow.features import encoder_from_spec, feature_id, parameter_count

    tasks = [read_probe_task(path) for path in args.task]
    device = resolve_device(args.device)
    quiet_libraries()
    results = {"settings": probe_settings(args), "tasks": task_summary(tasks, majority_accuracy), "encoders": {}}
    for spec in args.encoder:
        encoder = encoder_from_spec(spec, device)
        scores = probe_encoder(encoder.encoder, tasks, args)
        results["encoders"][encoder.label] = {"source": spec, "feature_id": feature_id(encoder.encoder),
                                              "parameters": parameter_count(encoder.encoder),
                                              "dim": encoder.encoder.output_dim, "scores": scores}
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "probe.json") as tmp:
        tmp.write_text(json.dumps(results, indent=2) + "\n")
    with atomic_path(out / "probe.md") as tmp:
        tmp.write_text(probe_markdown(results))
    print(probe_markdown(results))
    print(f"wrote {out / 'probe.json'} and {out / 'probe.md'}")
    return 0


def probe_settings(args: argparse.Namespace) -> dict:
    """Every setting that changes a probe score."""
    return {k: getattr(args, k) for k in ("head", "pooling", "epochs", "lr", "batch_size", "seed", "knn")}


def task_summary(tasks, majority_accuracy) -> dict:
    return {t.name: {"classes": len(t.classes), "clips": {s: len(r) for s, r in t.splits.items()},
                     "majority": majority_accuracy(t)} for t in tasks}


def probe_markdown(results: dict) -> str:
    """Test accuracy (%) per encoder and task, with the mean and the majority-class line."""
    tasks = list(results["tasks"])
    lines = ["| encoder | " + " | ".join(tasks) + " | mean |", "|---" * (len(tasks) + 2) + "|"]
    for label, entry in results["encoders"].items():
        values = [entry["scores"][t]["test"] for t in tasks]
        lines.append(f"| {label} | " + " | ".join(f"{100 * v:.1f}" for v in values)
                     + f" | {100 * sum(values) / len(values):.1f} |")
    majority = [results["tasks"][t]["majority"] for t in tasks]
    lines.append("| majority class | " + " | ".join(f"{100 * v:.1f}" for v in majority)
                 + f" | {100 * sum(majority) / len(majority):.1f} |")
    return "\n".join(lines) + "\n"
