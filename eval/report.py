"""The evaluation report: ``report.json`` (machine), ``report.md`` (table) and a self-contained
``report.html`` (tables, per-clip histograms, best/worst spectrograms, metric-versus-step curves;
images inlined as base64 PNG, no external resources)."""

from __future__ import annotations

import datetime as _dt
import html
import json
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from dashflow.eval import plots
from dashflow.eval.suite import INHOUSE_NOTE, METRIC_INFO

from dashflow.outputs import atomic_path

PACKAGES = ("dashflow", "torch", "numpy", "scipy", "soxr", "soundfile", "transformers", "diffusers",
            "pesq", "pystoi", "speechmos", "onnxruntime", "laion-clap", "resemblyzer")
# per-clip keys that rank clips for the spectrogram grid, in order of preference
RANKING = ("clap", "kl_softmax", "mel", "pesq", "sisdr", "dnsmos_ovrl")
RUN_COLUMNS = ("steps", "cfg", "seed", "checkpoint", "train_step")


def environment() -> dict[str, str]:
    """Python and installed library versions."""
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def build_report(settings: dict, models: dict, reference: dict, runs: list[dict]) -> dict[str, Any]:
    """Everything the three files show, as plain JSON-able data."""
    ref = {k: v for k, v in reference.items() if k not in ("folder", "extraction")}
    return {"tool": "dashflow eval", "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "reference": ref, "models": models, "settings": settings, "runs": runs,
            "environment": environment(), "metric_info": {k: dict(zip(("label", "better", "meaning"), v, strict=True))
                                                          for k, v in METRIC_INFO.items()}}


def write_report(report: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """Write report.json, report.md and report.html into ``out_dir``."""
    out = Path(out_dir)
    files = {"report.json": json.dumps(report, indent=2, default=str, ensure_ascii=False),
             "report.md": render_markdown(report), "report.html": render_html(report)}
    for name, text in files.items():
        with atomic_path(out / name) as tmp:
            tmp.write_text(text, encoding="utf-8")
    return [out / name for name in files]


# -- shared helpers ------------------------------------------------------------------------------

def metric_keys(report: dict) -> list[str]:
    present = {k for run in report["runs"] for k in run["metrics"]}
    return [k for k in METRIC_INFO if k in present]


def column_title(key: str) -> str:
    label, better, _ = METRIC_INFO[key]
    return f"{label} {'↓' if better == 'lower' else '↑'}"


def format_metric(entry: dict | None) -> str:
    if not entry:
        return ""
    if entry.get("value") is None:
        return "n/a"
    text = f"{entry['value']:.4g}"
    return f"{text} ± {entry['std']:.2g}" if "std" in entry else text


def format_length(audio: dict) -> str:
    """Clip length in seconds: one number when all clips agree to 0.1 s, else the range."""
    if not audio:
        return ""
    low, high = audio["seconds_min"], audio["seconds_max"]
    return f"{low:.1f}" if high - low < 0.05 else f"{low:.1f}-{high:.1f}"


def format_setting(value: Any) -> str:
    if isinstance(value, dict) and "per_clip" in value:
        values = value["per_clip"]
        if all(isinstance(v, (int, float)) for v in values):
            return f"per clip: {values[0]}-{values[-1]} ({len(values)} values)"
        return f"per clip: {', '.join(map(str, values[:3]))}{', ...' if len(values) > 3 else ''} ({len(values)} values)"
    return "" if value is None else str(value)


def _reference_size(ref: dict) -> str:
    length = format_length(ref.get("audio", {}))
    return f"{ref.get('n_files', 0)} files" + (f" of {length} s" if length else "")


def model_details(model: dict) -> str:
    """Every recorded setting of an embedder except its name and full hash."""
    return "; ".join(f"{k} = {v}" for k, v in model.items() if k not in ("model", "sha256"))


def issue_lines(report: dict) -> list[str]:
    """One line per problem: unreadable, unpaired, uncaptioned and failed clips, failed metrics."""
    lines = [f"reference: unreadable {cid}: {why}" for cid, why in report["reference"].get("unreadable", {}).items()]
    for run in report["runs"]:
        issues, name = run["issues"], run["name"]
        lines += [f"{name}: unreadable {cid}: {why}" for cid, why in issues["unreadable"].items()]
        for key, what in (("unpaired_generated", "generated clips without a reference"),
                          ("unpaired_reference", "reference clips without a generated clip"),
                          ("uncaptioned", "generated clips without a caption")):
            if issues[key]:
                shown = ", ".join(issues[key][:10]) + (", ..." if len(issues[key]) > 10 else "")
                lines.append(f"{name}: {len(issues[key])} {what}: {shown}")
        if unmapped := issues.get("unmapped"):
            shown = ", ".join(f"{cid} ({'no prompt' if p is None else repr(p)})"
                              for cid, p in list(unmapped.items())[:10])
            lines.append(f"{name}: {len(unmapped)} generated clips whose prompt maps to no classifier label: {shown}"
                         + (", ..." if len(unmapped) > 10 else ""))
        for metric, clips in issues["failed"].items():
            lines += [f"{name}: {metric} failed on {cid}: {why}" for cid, why in clips.items()]
        lines += [f"{name}: {METRIC_INFO[k][0]} not computed: {m['error']}"
                  for k, m in run["metrics"].items() if m.get("error")]
        lines += [f"{name}: {METRIC_INFO[k][0]}: {m['n_clamped']} of {m['n_pairs']} clips below 0 (the reference "
                  f"formula's eps and, for sigmoid, its missing (1 - p) terms) are counted as 0; unclamped mean "
                  f"{m['raw_value']:.4g}" for k, m in run["metrics"].items() if m.get("n_clamped")]
    return lines


def best_and_worst(run: dict, n: int = 3) -> tuple[str | None, list[dict], list[dict]]:
    """The n best and n worst clips of a run by the first ranking metric it has (for spectrograms)."""
    for key in RANKING:
        scored = sorted(((c[key], cid) for cid, c in run["per_clip"].items() if key in c),
                        reverse=METRIC_INFO[key][1] == "higher")
        if scored:
            best, worst = scored[:n], [s for s in scored[-n:] if s not in scored[:n]][::-1]
            return key, _grid_entries(run, key, best, "best"), _grid_entries(run, key, worst, "worst")
    return None, [], []


def _grid_entries(run: dict, key: str, picks: list[tuple[float, str]], kind: str) -> list[dict]:
    return [{"title": f"{kind}: {cid} ({METRIC_INFO[key][0]} {value:.3f})", "file": run["per_clip"][cid]["file"],
             "reference_file": run["per_clip"][cid].get("reference_file")} for value, cid in picks]


def inhouse_sections(report: dict) -> tuple[str, list[tuple[str, list[str], list[list[str]]]]] | None:
    """The in-house classifier's line, then per run: (name, notes, per-class rows [label, correct / total,
    accuracy]); None without a classifier."""
    model = report["models"].get("inhouse")
    if model is None:
        return None
    own = model.get("validation_top1")
    head = (f"{INHOUSE_NOTE}. Classifier {model['folder']} (sha256 {str(model['sha256'])[:16]}): "
            f"{model['n_labels']} labels, its own validation top-1 "
            f"{'n/a' if own is None else f'{own:.3f}'} on {model.get('validation_clips')} held-out clips.")
    runs = []
    for run in report["runs"]:
        top1, sep = run["metrics"].get("top1") or {}, run["metrics"].get("prompt_sep") or {}
        notes = []
        if top1.get("value") is not None:
            notes.append(f"top-1 {top1['value']:.3f} over {top1['n_clips']} clips with a mapped prompt "
                         f"({top1['n_unmapped']} unmapped)")
        if sep.get("value") is not None:
            notes.append(f"prompt separation {sep['value']:.3f} = same prompt across seeds {sep['same_prompt']:.3f} "
                         f"- different prompts at one seed {sep['same_seed']:.3f} ({sep['n_pairs_same_prompt']} "
                         f"and {sep['n_pairs_same_seed']} pairs)")
        rows = [[label, f"{c} / {t}", f"{c / t:.3f}"] for label, (c, t) in top1.get("per_class", {}).items()]
        runs.append((run["name"], notes, rows))
    return head, runs


# -- Markdown ------------------------------------------------------------------------------------

def run_columns(report: dict) -> list[str]:
    """The RUN_COLUMNS some run has a value for (enhanced folders carry no generation settings)."""
    return [c for c in RUN_COLUMNS if any(run["settings"].get(c) is not None for run in report["runs"])]


def render_markdown(report: dict) -> str:
    keys, columns = metric_keys(report), run_columns(report)
    ref = report["reference"]
    lines = ["# dashflow evaluation report", "",
             f"Created {report['created']}. Reference: **{ref.get('name')}** ({_reference_size(ref)}"
             + (f", set sha256 `{ref['set_sha256'][:16]}`" if ref.get("set_sha256") else "") + ").", "",
             "## Metrics", ""]
    header = ["run", "length (s)", *columns, *(column_title(k) for k in keys)]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for run in report["runs"]:
        cells = [run["name"], format_length(run.get("audio", {})),
                 *(format_setting(run["settings"].get(c)) for c in columns),
                 *(format_metric(run["metrics"].get(k)) for k in keys)]
        lines.append("| " + " | ".join(cells) + " |")
    if inhouse := inhouse_sections(report):
        head, runs = inhouse
        lines += ["", "## In-house classifier", "", head]
        for name, notes, rows in runs:
            lines += ["", f"### {name}", "", *(f"- {note}" for note in notes)]
            if rows:
                lines += ["", "| label | correct / total | accuracy |", "|---|---|---|",
                          *("| " + " | ".join(row) + " |" for row in rows)]
    lines += ["", "## Models", "", "| embedder | model | weights | sha256 | official file |", "|---|---|---|---|---|"]
    for name, m in report["models"].items():
        lines.append(f"| {name} | {m.get('model')} | {m.get('weights', m.get('checkpoint'))} | "
                     f"`{str(m.get('sha256'))[:16]}` | {m.get('official_file', 'unknown')} |")
    lines += ["", "## Settings", ""]
    for name, model in report["models"].items():
        lines.append(f"- **{name}**: " + model_details(model))
    lines += [f"- **{k}**: {json.dumps(v, ensure_ascii=False, default=str)}" for k, v in report["settings"].items()]
    lines += ["", "## Issues", ""] + ([f"- {line}" for line in issue_lines(report)] or ["None."])
    lines += ["", "## Environment", "", ", ".join(f"{k} {v}" for k, v in report["environment"].items()), ""]
    return "\n".join(lines)


# -- HTML ----------------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.45 -apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif;margin:2rem auto;max-width:1100px;
color:#1d2330;padding:0 1rem}h1{font-size:1.6rem;margin-bottom:.2rem}h2{margin-top:2rem;border-bottom:1px solid #dde2ea;
padding-bottom:.2rem;font-size:1.2rem}.sub{color:#5b6578}table{border-collapse:collapse;margin:.6rem 0;font-size:13px}
th,td{border:1px solid #dde2ea;padding:.3rem .6rem;text-align:left;vertical-align:top}th{background:#f3f5f9}
td.num{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}td.best{background:#e4f5e8;font-weight:600}
code{font-size:12px;background:#f3f5f9;padding:0 .2rem}img{max-width:100%;border:1px solid #eef0f4;margin:.4rem 0}
.issue{color:#9a3412}.figs{display:flex;flex-wrap:wrap;gap:1rem}.figs figure{margin:0}
figcaption{font-size:12px;color:#5b6578}details{margin:.3rem 0}
"""


def _e(value: Any) -> str:
    return html.escape(str(value))


def _table(header: list[str], rows: list[list[str]], raw: bool = False) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(c if raw else f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _metric_table(report: dict, keys: list[str]) -> str:
    best: dict[str, float] = {}
    for k in keys:
        values = [r["metrics"][k]["value"] for r in report["runs"] if r["metrics"].get(k, {}).get("value") is not None]
        if len(values) > 1:
            best[k] = (min if METRIC_INFO[k][1] == "lower" else max)(values)
    columns = run_columns(report)
    header = ["run", "length (s)", *columns, *(column_title(k) for k in keys)]
    rows = []
    for run in report["runs"]:
        texts = [run["name"], format_length(run.get("audio", {})),
                 *(format_setting(run["settings"].get(c)) for c in columns)]
        cells = [f"<td>{_e(t)}</td>" for t in texts]
        for k in keys:
            entry = run["metrics"].get(k) or {}
            cls = "num best" if entry.get("value") is not None and entry.get("value") == best.get(k) else "num"
            title = _e(entry.get("error") or ", ".join(f"{a}={b}" for a, b in entry.items() if a != "value"))
            cells.append(f'<td class="{cls}" title="{title}">{_e(format_metric(entry))}</td>')
        rows.append(cells)
    return _table(header, rows, raw=True)


def _figure(png: str | None, caption: str) -> str:
    if png is None:
        return ""
    return (f'<figure><img alt="{_e(caption)}" src="data:image/png;base64,{png}">'
            f"<figcaption>{_e(caption)}</figcaption></figure>")


def render_html(report: dict) -> str:
    keys = metric_keys(report)
    ref, runs = report["reference"], report["runs"]
    parts = [f"<h1>dashflow evaluation report</h1><p class='sub'>Created {_e(report['created'])} · reference "
             f"<b>{_e(ref.get('name'))}</b> ({_e(_reference_size(ref))}"
             + (f", set sha256 <code>{_e(ref['set_sha256'][:16])}</code>" if ref.get("set_sha256") else "")
             + f") · {len(runs)} run(s)</p>", "<h2>Metrics</h2>", _metric_table(report, keys),
             "<p class='sub'>" + " · ".join(f"<b>{_e(METRIC_INFO[k][0])}</b>: {_e(METRIC_INFO[k][2])}" for k in keys)
             + "</p>"]
    parts.append(_figure(plots.curves(runs, {k: METRIC_INFO[k] for k in keys}), "metrics across runs"))
    hists = [_figure(plots.histogram(runs, key, METRIC_INFO[key][0]), f"per-clip {METRIC_INFO[key][0]}")
             for key in ("clap", "kl_softmax", "pesq", "dnsmos_ovrl", "spksim")]
    if any(hists):
        parts += ["<h2>Per-clip distributions</h2><div class='figs'>", *hists, "</div>"]
    for run in runs:
        key, best, worst = best_and_worst(run)
        if key:
            parts += [f"<h2>Best and worst clips · {_e(run['name'])}</h2>",
                      _figure(plots.spectrogram_grid(best, worst),
                              f"mel spectrograms (16 kHz) of the best (top) and worst (bottom) clips by "
                              f"{METRIC_INFO[key][0]}, each above its reference")]
    if inhouse := inhouse_sections(report):
        head, inhouse_runs = inhouse
        parts += ["<h2>In-house classifier</h2>", f"<p class='sub'>{_e(head)}</p>"]
        for name, notes, rows in inhouse_runs:
            parts += [f"<h3>{_e(name)}</h3>", "<ul>" + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>"]
            if rows:
                parts.append(_table(["label", "correct / total", "accuracy"], rows))
    parts += ["<h2>Models</h2>", _table(
        ["embedder", "model", "weights", "sha256", "official file", "official architecture"],
        [[n, m.get("model"), m.get("weights", m.get("checkpoint")), str(m.get("sha256"))[:16],
          m.get("official_file", "unknown"), m.get("official_architecture", "")] for n, m in report["models"].items()])]
    parts += ["<h2>Settings</h2>", _table(["what", "setting"], [
        *([n, model_details(m)] for n, m in report["models"].items()),
        *([k, json.dumps(v, ensure_ascii=False, default=str)] for k, v in report["settings"].items()),
        *([f"run {r['name']}", r["generated"] + " · " + ", ".join(f"{k} = {format_setting(v)}"
                                                                  for k, v in r["settings"].items())] for r in runs),
        ["reference", f"{ref.get('path')} ({_reference_size(ref)})"]])]
    issues = issue_lines(report)
    parts += ["<h2>Issues</h2>", "<ul>" + "".join(f"<li class='issue'>{_e(i)}</li>" for i in issues) + "</ul>"
              if issues else "<p>None: every file was read and paired.</p>"]
    versions = ", ".join(f"{k} {v}" for k, v in report["environment"].items())
    parts += [f"<h2>Environment</h2><p class='sub'>{_e(versions)}</p>"]
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>dashflow evaluation report</title>"
            f"<style>{_CSS}</style></head><body>" + "".join(parts) + "</body></html>\n")
