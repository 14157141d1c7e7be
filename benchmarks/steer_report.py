"""``report.md`` of ``benchmarks/steer.py``: each measurement against issue 21's bar, from the
stages' JSON lines (a stage not run yet is said to be missing)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from benchmarks.common import ROOT, git_commit


def read_rows(out: Path, stage: str) -> list[dict]:
    path = out / f"{stage}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def verdict(ok: bool) -> str:
    return "**pass**" if ok else "**FAIL**"


def negative_section(rows: list[dict]) -> list[str]:
    lines = [("| prompt | negative | P(negative) without -> with (replacing null) | P(prompt) without -> with "
             "(replacing null) | top-1 without -> with (replacing null) |"), "|---|---|---|---|---|"]
    for r in rows:
        cells = [" -> ".join(f"{r[f'{key}_{mode}']:.{digits}f}" for mode in ("without", "with"))
                 + f" ({r[f'{key}_replacing_null']:.{digits}f})" for key, digits in
                 (("p_negative", 3), ("p_prompt", 3), ("top1", 2))]
        lines.append(f"| {r['prompt']} | {r['negative_prompt']} | {' | '.join(cells)} |")
    without = np.mean([r["p_negative_without"] for r in rows])
    with_ = np.mean([r["p_negative_with"] for r in rows])
    falls = sum(r["p_negative_with"] < r["p_negative_without"] for r in rows)
    top_without, top_with = np.mean([r["top1_without"] for r in rows]), np.mean([r["top1_with"] for r in rows])
    ok = len(rows) >= 5 and with_ < without and top_with >= top_without
    replaced = np.mean([r["p_negative_replacing_null"] for r in rows])
    top_replaced = np.mean([r["top1_replacing_null"] for r in rows])
    return [(f"{verdict(ok)} over {len(rows)} pairs x {len(rows[0]['seeds'])} seeds: mean P(negative class) "
            f"{without:.3f} -> {with_:.3f} (falls in {falls} of {len(rows)} pairs); the prompt's top-1 "
            f"{top_without:.2f} -> {top_with:.2f}. The negative prompt is its own guidance branch, "
            "`v = v_u + 5 (v_c - v_u) - 1.0 (v_n - v_u)`; diffusers' form, the negative branch in the null "
            f"one's place, gives P(negative) {replaced:.3f} but top-1 {top_replaced:.2f} (in brackets below)."),
            "", *lines]


def a2a_section(rows: list[dict]) -> list[str]:
    strengths = sorted({r["strength"] for r in rows})
    lines = ["| strength | top-1 = init class | top-1 = prompt class | mean P(init) | mean P(prompt) |",
             "|---|---|---|---|---|"]
    share = {}
    for s in strengths:
        part = [r for r in rows if r["strength"] == s]
        keep = np.mean([r["top1"] == r["init_class"] for r in part])
        follow = np.mean([r["top1"] == r["prompt_class"] for r in part])
        share[s] = (keep, follow)
        lines.append(f"| {s:g} | {keep:.2f} | {follow:.2f} | {np.mean([r['p_init'] for r in part]):.3f} | "
                     f"{np.mean([r['p_prompt'] for r in part]):.3f} |")
    clips, outputs = len({r["init_class"] for r in rows}), len([r for r in rows if r["strength"] == strengths[0]])
    keep, follow = share.get(0.2, (0, 0))[0], share.get(0.9, (0, 0))[1]
    return [(f"{verdict(keep >= 0.8 and follow >= 0.7)} over {clips} clips (one per class, prompt = another class, "
            f"{outputs // clips} seeds each): at strength 0.2 {keep:.1%} keep the init clip's class (bar 80 %), at 0.9 "
            f"{follow:.1%} follow the prompt (bar 70 %; at 1, where the clip is ignored, the model's own top-1 on "
            f"these prompts is {share.get(1.0, (0, 0))[1]:.1%}). Curve: `a2a_curve.png`."), "", *lines]


def inpaint_section(rows: list[dict]) -> list[str]:
    snr = [r["snr_outside_db"] for r in rows]
    recon = [r["codec_reconstruction_snr_outside_db"] for r in rows]
    inside = np.mean([r["region_top1"] == r["prompt_class"] for r in rows])
    alone = np.mean([r["generated_alone_top1"] == r["prompt_class"] for r in rows])
    worst = min(snr)
    clips = len({r["clip_class"] for r in rows})
    return [(f"{verdict(worst >= 25 and inside >= 0.7)} over {clips} clips x {len(rows) // clips} seeds (5-6 s, region "
            f"{rows[0]['region'][0]:g}-{rows[0]['region'][1]:g} s, prompt = another class): outside the region, more "
            "than 0.2 s from its edges, the worst SNR against the input is "
            f"{'infinite (the samples are identical)' if np.isinf(worst) else f'{worst:.1f} dB'} "
            "(bar 25 dB; the pipeline returns the input's own samples there, crossfaded over 0.1 s at each "
            f"edge; decoding the kept latents instead would give {np.median(recon):.1f} dB, the median codec "
            "reconstruction SNR); inside, "
            f"{inside:.1%} are the prompt's class (bar 70 %; the same prompts generated alone at that length: "
            f"{alone:.1%}), mean P(prompt) {np.mean([r['p_prompt_region'] for r in rows]):.3f}. "
            "Grid: `inpaint_grid.png`.")]


def longform_section(rows: list[dict]) -> list[str]:
    lines = [("| prompt | seams | max seam flux / median elsewhere | mean rank of the seams among other "
              "positions | control: butted 4 s clips | top-1 per 10 s = prompt |"), "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['prompt']} | {r['seams']} | {r['max_seam_flux_ratio']:.2f} | "
                     f"{np.mean(r['seam_percentile']):.2f} | {max(r['control_butted_4s_ratio']):.2f} | "
                     f"{r['top1_share']:.2f} |")
    passing = [r["prompt"] for r in rows if r["max_seam_flux_ratio"] <= 1.5]
    first = rows[0]
    return [(f"**{len(passing)} of {len(rows)} clips pass**: {first['seconds']:.0f} s clips in {first['window_s']:g} s windows "
             f"({first['overlap_s']:g} s overlap, the last half of it a latent crossfade). Per seam: the largest "
             f"spectral flux within its {first['overlap_s'] / 2:g} s crossfade zone over the median of the same "
             "measure elsewhere (bar 1.5), "
             "and where it ranks among all other positions (0.5: unremarkable). Within the bar at every seam: "
             f"{', '.join(passing) or 'none'} ({len(passing)} of {len(rows)} clips). The control, independent "
             "4 s clips butted together, shows how little this measure alone says about bursty sounds. Flux "
             "curves: `longform_flux.png` (the clips: `runs/steer/longform/`)."), "", *lines]


def memory_section(rows: list[dict]) -> list[str]:
    lines = ["| seconds | method | peak RSS growth over the loaded pipeline (MiB) | output audio (MiB) | wall (s) |",
             "|---|---|---|---|---|"]
    for r in rows:
        method = f"{r['window_s']:g} s windows" if r["windowed"] else "one pass"
        lines.append(f"| {r['seconds']:g} | {method} | {r['peak_mib'] - r['rss_loaded_mib']:.1f} | "
                     f"{r['output_mib']:.1f} | {r['wall_s']:.1f} |")
    def growth(r: dict) -> float:
        return r["peak_mib"] - r["rss_loaded_mib"] - r["output_mib"]

    windowed = [growth(r) for r in rows if r["windowed"]]
    one_pass = [growth(r) for r in rows if not r["windowed"]]
    seconds = [r["seconds"] for r in rows if r["windowed"]]
    flat = max(windowed) - min(windowed) < 0.25 * (max(one_pass) - min(one_pass))
    return [(f"{verdict(flat)} windowed generation from {min(seconds):g} to {max(seconds):g} s: peak growth less "
             f"the output audio stays within {min(windowed):.0f}-{max(windowed):.0f} MiB, while one pass grows from "
             f"{one_pass[0]:.0f} to {one_pass[-1]:.0f} MiB between 10 and 60 s (CPU, one thread, a fresh process per "
             "row; flat: the windowed range under a quarter of the one-pass growth; wall times on a shared "
             "machine)."), "", *lines]


def shown(path: Path) -> str:
    """``path`` relative to the repository when inside it."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def classifier_top1(folder: Path) -> str:
    config = Path(folder) / "config.json"
    top1 = json.loads(config.read_text()).get("validation", {}).get("top1") if config.is_file() else None
    return "unknown" if top1 is None else f"{top1:.1%}"


def write_report(out: Path, args: argparse.Namespace) -> Path:
    sections = [("Negative prompt", "negative", negative_section), ("Audio-to-audio", "a2a", a2a_section),
                ("Inpainting", "inpaint", inpaint_section), ("Long-form", "longform", longform_section),
                ("Long-form memory", "memory", memory_section)]
    lines = ["# Steering the bundled demo model", "",
             (f"Pipeline `{shown(args.pipeline)}` (the bundled demo, trained on clips of at most 6 s), "
             f"25 steps, CFG 5, judged by the in-house classifier `{shown(args.classifier)}` (trained as "
             "`recipes/demo/train.sh` does: `dashflow train-classifier --epochs 25 --val-fraction 0 --manifest "
             f"corpus/heldout.jsonl --test-manifest corpus/train.jsonl` on `{shown(args.corpus)}`; its own top-1 on "
             f"those train clips: {classifier_top1(args.classifier)}). Input clips are the corpus's train clips, "
             "which the classifier never saw, one per class that it labels right. In-house numbers: not comparable "
             f"to published ones. Commit {git_commit()}; `python -m benchmarks.steer` remakes every file here."), ""]
    for title, stage, section in sections:
        rows = read_rows(out, stage)
        lines += [f"## {title}", "", *(section(rows) if rows else [f"not measured yet (`--stage {stage}`)"]), ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
