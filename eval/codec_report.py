"""The codec benchmark's report: reconstruction, understanding and speed of each latent space in one
table (JSON for machines, Markdown, HTML with plots). Input: the dict ``dashflow bench-codec`` builds,
``{"settings", "tasks": {task: {"classes", "clips", "majority"}}, "encoders": {label: row}}``.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from dashflow.eval.plots import to_png
from dashflow.eval.report import _CSS, _e, _figure, _table, environment
from dashflow.outputs import atomic_path

# reconstruction column: (set, key, title, better)
RECON_COLUMNS = (("audio", "mel_distance", "Mel-16k", "lower"), ("audio", "stft_distance", "STFT-16k", "lower"),
                 ("audio", "si_sdr", "SI-SDR (dB)", "higher"), ("speech", "pesq", "PESQ", "higher"),
                 ("speech", "stoi", "STOI", "higher"))


def probe_mean(row: dict, key: str = "test") -> float | None:
    """Mean over tasks of the linear probe's test accuracy (``test``) or the k-NN score (``knn``)."""
    scores = [entry.get(key) for entry in row["probes"].values()]
    return None if None in scores else float(np.mean(scores))


def rtf(row: dict) -> float | None:
    values = [scores["rtf"] for scores in row["reconstruction"].values()]
    return float(np.mean(values)) if values else None


def table_rows(results: dict) -> tuple[list[str], list[list[str]]]:
    """Header and text rows of the one table (probe accuracies in %)."""
    tasks = list(results["tasks"])
    header = ["encoder", "dim", "rate (Hz)", "params (M)", *(c[2] for c in RECON_COLUMNS), "enc+dec RTF",
              *tasks, "probe mean", "k-NN mean"]
    rows = []
    for label, row in results["encoders"].items():
        recon = [row["reconstruction"].get(kind, {}).get(key) for kind, key, _, _ in RECON_COLUMNS]
        speed = rtf(row)
        rows.append([label + (" (untrained)" if row.get("untrained") else ""), str(row["dim"]),
                     f"{row['rate_hz']:g}", f"{row['parameters'] / 1e6:.2f}",
                     *("–" if v is None else f"{v:.3f}" for v in recon), "–" if speed is None else f"{speed:.4f}",
                     *(f"{100 * row['probes'][t]['test']:.1f}" for t in tasks), f"{100 * probe_mean(row):.1f}",
                     "–" if probe_mean(row, "knn") is None else f"{100 * probe_mean(row, 'knn'):.1f}"])
    majority = [results["tasks"][t]["majority"] for t in tasks]
    rows.append(["majority class", "", "", "", *("" for _ in RECON_COLUMNS), "",
                 *(f"{100 * m:.1f}" for m in majority), f"{100 * np.mean(majority):.1f}", ""])
    return header, rows


def render_markdown(results: dict) -> str:
    header, rows = table_rows(results)
    tasks = results["tasks"]
    lines = ["# Codec benchmark", "", "| " + " | ".join(header) + " |", "|---" * len(header) + "|",
             *("| " + " | ".join(r) + " |" for r in rows), "",
             "Probe columns: test accuracy (%) of a LayerNorm + linear probe on frozen features, epoch chosen on "
             "the validation split; k-NN mean: X-ARES's k = 10 cosine k-NN score, averaged over the tasks; reconstruction through each codec's own decoder at 16 kHz; RTF = encode + "
             "decode seconds per second of audio on the benchmark's device.", "", "## Tasks", "",
             "| task | classes | train / val / test clips | majority class |", "|---|---|---|---|"]
    lines += [f"| {name} | {t['classes']} | {t['clips']['train']} / {t['clips']['val']} / {t['clips']['test']} | "
              f"{100 * t['majority']:.1f} % |" for name, t in tasks.items()]
    lines += ["", "## Settings", "", *(f"- {k}: {v}" for k, v in results["settings"].items()),
              *(f"- {label}: `{row['source']}` (features `{row['feature_id']}`)"
                for label, row in results["encoders"].items())]
    return "\n".join(lines) + "\n"


def probe_bars(results: dict) -> str:
    """Grouped bars: probe accuracy per task and encoder, with the majority-class line per task."""
    tasks, labels = list(results["tasks"]), list(results["encoders"])
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(tasks) * max(1, len(labels)) / 2), 3.6))
    width = 0.8 / len(labels)
    for i, label in enumerate(labels):
        scores = [100 * results["encoders"][label]["probes"][t]["test"] for t in tasks]
        ax.bar(np.arange(len(tasks)) + i * width - 0.4 + width / 2, scores, width, label=label)
    for j, task in enumerate(tasks):
        ax.hlines(100 * results["tasks"][task]["majority"], j - 0.45, j + 0.45, colors="black", linestyles="dashed")
    ax.set_xticks(np.arange(len(tasks)), tasks, rotation=20)
    ax.set_ylabel("probe test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8, ncol=2)
    return to_png(fig)


def tradeoff(results: dict) -> str | None:
    """Mean probe accuracy against Mel-16k distance, for encoders that reconstruct."""
    points = [(label, row["reconstruction"]["audio"]["mel_distance"], 100 * probe_mean(row))
              for label, row in results["encoders"].items() if "audio" in row["reconstruction"]]
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(5.0, 3.6))
    for label, x, y in points:
        ax.scatter(x, y)
        ax.annotate(label, (x, y), fontsize=8, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("Mel-16k distance (lower reconstructs better)")
    ax.set_ylabel("mean probe accuracy (%)")
    return to_png(fig)


def render_html(results: dict) -> str:
    header, rows = table_rows(results)
    body = ["<h1>Codec benchmark</h1><p class='sub'>reconstruction, understanding and speed of each latent space</p>",
            _table(header, rows), _figure(probe_bars(results), "probe accuracy per task (dashed: majority class)"),
            _figure(tradeoff(results), "understanding against reconstruction"),
            "<h2>Tasks</h2>", _table(["task", "classes", "train / val / test", "majority class"], [
                [n, str(t["classes"]), f"{t['clips']['train']} / {t['clips']['val']} / {t['clips']['test']}",
                 f"{100 * t['majority']:.1f} %"] for n, t in results["tasks"].items()]),
            "<h2>Settings</h2>", _table(["what", "setting"], [
                *([k, json.dumps(v)] for k, v in results["settings"].items()),
                *([label, f"{row['source']} · features {row['feature_id']}"] for label, row in results["encoders"].items())]),
            f"<h2>Environment</h2><p class='sub'>{_e(', '.join(f'{k} {v}' for k, v in environment().items()))}</p>"]
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>dashflow codec benchmark</title>"
            f"<style>{_CSS}</style></head><body>" + "".join(body) + "</body></html>\n")


def write_codec_report(results: dict, out: str | Path) -> list[Path]:
    """Write ``codec_bench.json``, ``.md`` and ``.html`` into ``out``; returns the paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in (("codec_bench.json", json.dumps({**results, "environment": environment()}, indent=2) + "\n"),
                       ("codec_bench.md", render_markdown(results)), ("codec_bench.html", render_html(results))):
        with atomic_path(out / name) as tmp:
            tmp.write_text(text)
        written.append(out / name)
    return written
