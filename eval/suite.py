"""`dashflow eval` without the command line: load the networks once, score runs against a reference.

Metric sets: ``generation`` (fad, fd, kl, is, clap), ``reconstruction`` (mel, stft, pesq, stoi,
sisdr), ``enhancement`` (pesq, stoi, sisdr, dnsmos, spksim) and ``inhouse`` (top1, fd_inhouse,
prompt_sep: an in-house classifier folder, :mod:`dashflow.eval.inhouse`); names and sets can be mixed. SpkSim
is reported as not computed, with the reason, when no speaker-encoder weights are found, and
fd_inhouse when there is no reference folder.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from dashflow.eval import enhancement as speech
from dashflow.eval.clap import cosine_scores, load_clap
from dashflow.eval.classifier_metrics import inception_score, kl_per_clip
from dashflow.eval.embedders import (
    ClapEmbedder,
    Cnn14Embedder,
    InhouseEmbedder,
    VGGishEmbedder,
)
from dashflow.eval.features import Extraction, FeatureCache, extract
from dashflow.eval.frechet import frechet_distance_of
from dashflow.eval.inhouse import prompt_separation, top1_by_class
from dashflow.eval.inputs import (
    ClipFolder,
    audio_summary,
    pair,
    read_sidecars,
    run_settings,
    scan_folder,
    sidecar_captions,
)
from dashflow.eval.reconstruction import (
    MEL_PRESETS,
    STFT_DISTANCE,
    mel_distance,
    stft_distance,
)
from dashflow.eval.speaker import MISSING_WEIGHTS, SpeakerEncoder, find_weights
from dashflow.eval.weights import locate, sha256_file, weights_dir
from tqdm import tqdm

from dashflow.audio import load_audio
from dashflow.device import resolve_device
from dashflow.errors import DashflowError

METRIC_SETS = {
    "generation": ("fad", "fd", "kl", "is", "clap"),
    "reconstruction": ("mel", "stft", "pesq", "stoi", "sisdr"),
    "enhancement": ("pesq", "stoi", "sisdr", "dnsmos", "spksim"),
    "inhouse": ("top1", "fd_inhouse", "prompt_sep"),
}
ALL_METRICS = ("fad", "fd", "kl", "is", "clap", "mel", "stft", "pesq", "stoi", "sisdr", "dnsmos", "spksim",
               "top1", "fd_inhouse", "prompt_sep")
INHOUSE = set(METRIC_SETS["inhouse"])
INHOUSE_NOTE = "In-house classifier metrics, not comparable to published numbers"
NEEDS_REFERENCE = {"fad", "fd", "kl", "mel", "stft", "pesq", "stoi", "sisdr", "spksim"}
PAIRED = ("mel", "stft", "pesq", "stoi", "sisdr", "spksim")

# report key -> (label, better, what it is)
METRIC_INFO = {
    "fad": ("FAD", "lower", "Fréchet distance of VGGish frame embeddings"),
    "fd": ("FD", "lower", "Fréchet distance of PANNs Cnn14 2048-d features"),
    "kl_softmax": ("KL (softmax)", "lower", "KL(reference || generated) of Cnn14 class softmax"),
    "kl_sigmoid": ("KL (sigmoid)", "lower", "the same with per-class sigmoids"),
    "is": ("IS", "higher", "Inception Score of Cnn14 logits"),
    "clap": ("CLAPScore", "higher", "mean caption-clip cosine in CLAP space"),
    "mel": ("Mel-16k", "lower", "multi-scale mel distance (DAC)"),
    "stft": ("STFT-16k", "lower", "multi-scale STFT distance (DAC)"),
    "pesq": ("PESQ-WB", "higher", "wideband PESQ MOS-LQO"),
    "stoi": ("STOI", "higher", "short-time objective intelligibility"),
    "sisdr": ("SI-SDR", "higher", "scale-invariant SDR in dB"),
    "dnsmos_ovrl": ("DNSMOS OVRL", "higher", "DNSMOS P.835 overall"),
    "dnsmos_sig": ("DNSMOS SIG", "higher", "DNSMOS P.835 signal"),
    "dnsmos_bak": ("DNSMOS BAK", "higher", "DNSMOS P.835 background"),
    "dnsmos_p808": ("DNSMOS P.808", "higher", "DNSMOS P.808 MOS"),
    "spksim": ("SpkSim", "higher", "cosine of GE2E (resemblyzer) speaker embeddings of output and reference"),
    "top1": ("Top-1 (in-house)", "higher", "share of generated clips classified as their prompted class"),
    "fd_inhouse": ("FD (in-house)", "lower", "Fréchet distance of the in-house classifier's clip embeddings"),
    "prompt_sep": ("Prompt sep. (in-house)", "higher",
                   "embedding cosine: same prompt across seeds minus different prompts at one seed"),
}


def parse_metrics(spec: str) -> list[str]:
    """``"fad,clap"`` or ``"reconstruction"`` (or a mix) -> metric names in canonical order."""
    chosen: set[str] = set()
    for token in filter(None, (t.strip().lower() for t in spec.split(","))):
        if token in METRIC_SETS:
            chosen.update(METRIC_SETS[token])
        elif token in ALL_METRICS:
            chosen.add(token)
        else:
            raise DashflowError(f"unknown metric {token!r}; use {', '.join(ALL_METRICS)} "
                                f"or a set: {', '.join(METRIC_SETS)}")
    if not chosen:
        raise DashflowError("no metrics requested")
    return [m for m in ALL_METRICS if m in chosen]


def check_reference(metrics: list[str], folder: str | Path | None) -> None:
    """One-line error when a metric that compares with references has no reference folder."""
    needing = [m for m in metrics if m in NEEDS_REFERENCE]
    if folder is None and needing:
        raise DashflowError(f"--reference is needed for {', '.join(needing)}")


@dataclass
class EvalOptions:
    metrics: list[str]
    weights_dir: str | Path | None = None
    clap_model: str | Path | None = None   # .pt file (laion-clap) or HF folder; default in weights dir
    speaker_weights: str | Path | None = None  # GE2E pretrained.pt; default: an installed resemblyzer's
    classifier: str | Path | None = None   # in-house classifier folder (top1, fd_inhouse, prompt_sep)
    cache_dir: str | Path | None = None    # None: no feature cache
    device: str = "auto"
    clap_crop: str = "random"
    clap_seed: int = 0
    is_splits: int = 10
    is_seed: int = 2020
    mel_preset: str = "dac"
    align: str = "reference"
    run_flags: dict[str, Any] = field(default_factory=dict)  # steps / cfg / seed / checkpoint



class Evaluator:
    """Holds the networks; :meth:`reference` once, then :meth:`run` per generated folder."""

    def __init__(self, options: EvalOptions):
        self.options = options
        self.device = resolve_device(options.device)
        self.cache = FeatureCache(options.cache_dir)
        wanted = set(options.metrics)
        if options.mel_preset not in MEL_PRESETS:
            raise DashflowError(f"unknown mel preset {options.mel_preset!r}; use one of {', '.join(MEL_PRESETS)}")
        # find every file first, so a missing one fails before any work
        vggish = locate("vggish", options.weights_dir) if "fad" in wanted else None
        cnn14 = locate("cnn14", options.weights_dir) if wanted & {"fd", "kl", "is"} else None
        clap = None
        if "clap" in wanted:
            clap = Path(options.clap_model) if options.clap_model else locate("clap", options.weights_dir)
        self.vggish = VGGishEmbedder(vggish, self.device) if vggish else None
        self.cnn14 = Cnn14Embedder(cnn14, self.device) if cnn14 else None
        self.clap = (ClapEmbedder(load_clap(clap, self.device), options.clap_crop, options.clap_seed)
                     if clap else None)
        # optional: without weights SpkSim is reported as not computed, the other metrics still run
        speaker = find_weights(options.speaker_weights) if "spksim" in wanted else None
        self.speaker = SpeakerEncoder(speaker, self.device) if speaker else None
        if wanted & INHOUSE and options.classifier is None:
            raise DashflowError(f"--classifier is needed for {', '.join(m for m in options.metrics if m in INHOUSE)}")
        self.inhouse = InhouseEmbedder(Path(options.classifier), self.device) if wanted & INHOUSE else None
        self._reference: dict[str, Any] | None = None

    @property
    def models(self) -> dict[str, dict[str, Any]]:
        return {e.name: e.settings for e in (self.vggish, self.cnn14, self.clap, self.speaker, self.inhouse)
                if e is not None}

    def settings(self) -> dict[str, Any]:
        """Every option that changes a number, for the report."""
        o, wanted = self.options, set(self.options.metrics)
        out: dict[str, Any] = {"metrics": o.metrics, "device": str(self.device),
                               "weights_dir": str(weights_dir(o.weights_dir)),
                               "feature_cache": str(self.cache.root) if self.cache.root else None}
        if "kl" in wanted:
            out["kl"] = {"direction": "KL(reference || generated)", "pairing": "basename", "eps": 1e-6}
        if "is" in wanted:
            out["is"] = {"splits": o.is_splits, "seed": o.is_seed, "shuffle": "RandomState(seed).permutation"}
        if "clap" in wanted:
            out["clap"] = {"score": "mean raw cosine (no x100, no clamp)", "text_tokens": 77}
        if wanted & {*PAIRED, "dnsmos"}:
            out["speech"] = {"sample_rate": speech.SAMPLE_RATE, "alignment": o.align, "pesq": "wideband (P.862.2)",
                             "stoi": "classic", "dnsmos": "P.835 (speechmos, non-personalised)"}
        if "mel" in wanted:
            out["mel"] = {"preset": o.mel_preset, **MEL_PRESETS[o.mel_preset].describe()}
        if "stft" in wanted:
            out["stft"] = STFT_DISTANCE.describe()
        if wanted & INHOUSE:
            out["inhouse"] = {"note": INHOUSE_NOTE, "prompts": "sidecar prompt (or --captions), mapped to a label "
                              "through the classifier's captions or label names (exact, stripped, lower-cased)",
                              "prompt_sep": "mean cosine of clip embeddings: same prompt at different seeds minus "
                              "different prompts at the same sidecar seed",
                              "fd_inhouse": "Fréchet distance of one window-averaged embedding per clip"}
        return out

    def reference(self, folder: str | Path | None, name: str | None = None) -> dict[str, Any]:
        """Scan (and embed, for FAD/FD/KL) the reference folder; kept for every run."""
        check_reference(self.options.metrics, folder)
        if folder is None:
            self._reference = {"name": name, "path": None, "n_files": 0}
            return self._reference
        ref = scan_folder(folder)
        embedders = self._embedders("reference")
        extraction = extract(ref.clips, embedders, self.cache, desc="reference")
        hashes = extraction.hashes if embedders else {cid: sha256_file(p) for cid, p in ref.clips.items()}
        digest = hashlib.sha256("".join(f"{k} {v}\n" for k, v in sorted(hashes.items())).encode()).hexdigest()
        self._reference = {"name": name or ref.root.name, "path": str(ref.root), "n_files": len(ref.clips),
                           "set_sha256": digest, "audio": audio_summary(ref), "unreadable": extraction.bad,
                           "folder": ref, "extraction": extraction}
        return self._reference

    def run(self, folder: str | Path, captions: dict[str, str] | None = None) -> dict[str, Any]:
        """Score one folder of generated audio against the reference."""
        if self._reference is None:
            raise RuntimeError("call reference() before run()")
        gen = scan_folder(folder)
        sidecars = read_sidecars(gen)
        result = _new_run(gen, run_settings(sidecars, self.options.run_flags))
        ref_folder: ClipFolder | None = self._reference.get("folder")
        if ref_folder is not None:
            pairing = pair(gen, ref_folder)
            result["issues"]["unpaired_generated"] = pairing.only_generated
            result["issues"]["unpaired_reference"] = pairing.only_reference
            for cid in pairing.paired:
                result["per_clip"][cid]["reference_file"] = str(ref_folder.clips[cid])
        embedders = self._embedders("generated")
        if embedders:
            extraction = extract(gen.clips, embedders, self.cache, desc=gen.root.name)
            result["issues"]["unreadable"].update(extraction.bad)
            self._embedding_metrics(result, extraction, sidecar_captions(sidecars) if captions is None else captions,
                                    sidecars)
        if set(self.options.metrics) & {*PAIRED, "dnsmos"}:
            self._speech_metrics(result, gen, ref_folder)
        return result

    # -- metric groups ---------------------------------------------------------------------------

    def _embedders(self, side: str) -> list:
        """The embedders the requested metrics need on the "generated" or "reference" side."""
        need = {"vggish": {"fad"}, "cnn14": {"fd", "kl", "is"} if side == "generated" else {"fd", "kl"},
                "clap": {"clap"} if side == "generated" else set(),
                "inhouse": INHOUSE if side == "generated" else {"fd_inhouse"}}
        wanted = set(self.options.metrics)
        return [e for e in (self.vggish, self.cnn14, self.clap, self.inhouse)
                if e is not None and wanted & need[e.name]]

    def _embedding_metrics(self, result: dict, gen: Extraction, captions: dict[str, str],
                           sidecars: dict[str, dict]) -> None:
        wanted = set(self.options.metrics)
        ref: Extraction | None = self._reference.get("extraction")
        metrics, per_clip = result["metrics"], result["per_clip"]
        if "fad" in wanted:
            metrics["fad"] = _guard(lambda: pooled_frechet(gen.features["vggish"], ref.features["vggish"], "frames"))
        if "fd" in wanted:
            metrics["fd"] = _guard(lambda: pooled_frechet(gen.features["cnn14"], ref.features["cnn14"], "features"))
        if "kl" in wanted:
            metrics.update(_kl(gen.features["cnn14"], ref.features["cnn14"], per_clip))
        if "is" in wanted:
            metrics["is"] = _guard(lambda: _inception(gen.features["cnn14"], self.options.is_splits,
                                                      self.options.is_seed))
        if "clap" in wanted:
            metrics["clap"] = _guard(lambda: self._clap_score(gen.features["clap"], captions, result))
        if "top1" in wanted:
            metrics["top1"] = _guard(lambda: self._top1(gen.features["inhouse"], captions, result))
        if "fd_inhouse" in wanted:
            metrics["fd_inhouse"] = _guard(lambda: _inhouse_frechet(gen.features["inhouse"], ref))
        if "prompt_sep" in wanted:
            metrics["prompt_sep"] = _guard(lambda: _prompt_sep(gen.features["inhouse"], captions, sidecars))

    def _top1(self, outputs: dict, captions: dict[str, str], result: dict) -> dict:
        """Top-1 of the classifier against the prompted class; clips whose prompt names no class
        (or that have none) go to ``issues["unmapped"]`` as {clip: prompt or None}."""
        classifier, per_clip = self.inhouse.classifier, result["per_clip"]
        predicted, prompted, unmapped = [], [], result["issues"]["unmapped"]
        for cid, features in outputs.items():
            label = classifier.labels[int(np.argmax(features["logits"]))]
            per_clip[cid]["inhouse_label"] = label
            target = classifier.label_for_prompt(captions[cid]) if cid in captions else None
            if target is None:
                unmapped[cid] = captions.get(cid)
                continue
            per_clip[cid]["prompted_label"] = target
            predicted.append(label)
            prompted.append(target)
        if not prompted:
            raise DashflowError("no generated clip has a prompt that maps to a classifier label")
        scores = top1_by_class(predicted, prompted)
        return {"value": scores["overall"], "n_clips": len(prompted), "n_unmapped": len(unmapped),
                "per_class": scores["per_class"]}

    def _clap_score(self, embeddings: dict, captions: dict[str, str], result: dict) -> dict:
        ids = [cid for cid in embeddings if cid in captions]
        result["issues"]["uncaptioned"] = sorted(cid for cid in embeddings if cid not in captions)
        if not ids:
            raise DashflowError("no generated clip has a caption (give --captions or sidecar prompts)")
        texts = [captions[cid] for cid in ids]
        text = torch.cat([self.clap.model.embed_text(texts[i:i + 32]) for i in range(0, len(texts), 32)]).numpy()
        scores = cosine_scores(np.stack([embeddings[cid]["embedding"] for cid in ids]), text)
        for cid, score in zip(ids, scores, strict=True):
            result["per_clip"][cid]["clap"] = float(score)
            result["per_clip"][cid]["caption"] = captions[cid]
        return {"value": float(scores.mean()), "n_clips": len(ids)}

    def _speech_metrics(self, result: dict, gen: ClipFolder, ref: ClipFolder | None) -> None:
        wanted = [m for m in self.options.metrics if m in PAIRED or m == "dnsmos"]
        issues, per_clip = result["issues"], result["per_clip"]
        failed: dict[str, dict[str, str]] = issues["failed"]
        scorers: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
            "mel": lambda r, e: mel_distance(e, r, speech.SAMPLE_RATE, self.options.mel_preset),
            "stft": lambda r, e: stft_distance(e, r, speech.SAMPLE_RATE),
            "pesq": speech.pesq_wb, "stoi": speech.stoi, "sisdr": speech.si_sdr,
            "spksim": self.speaker.similarity if self.speaker else None,
        }
        paired = [m for m in wanted if m in PAIRED and scorers[m] is not None]
        for cid, path in tqdm(gen.clips.items(), delay=1.0, desc=f"{gen.root.name} (speech)", unit="clip"):
            if cid in issues["unreadable"]:
                continue
            try:
                est = load_audio(path, speech.SAMPLE_RATE).numpy()
            except DashflowError as exc:
                issues["unreadable"][cid] = str(exc)
                continue
            if "dnsmos" in wanted:
                for name, value in speech.dnsmos(est).items():
                    per_clip[cid][f"dnsmos_{name}"] = value
            if ref is None or cid not in ref.clips or not paired:
                continue
            try:
                clean = load_audio(ref.clips[cid], speech.SAMPLE_RATE).numpy()
            except DashflowError as exc:
                self._reference["unreadable"][cid] = str(exc)
                continue
            clean, est_aligned = speech.align(clean, est, self.options.align)
            for name in paired:
                try:
                    per_clip[cid][name] = scorers[name](clean, est_aligned)
                except DashflowError as exc:
                    failed.setdefault(name, {})[cid] = str(exc)
        keys = paired + (
            [f"dnsmos_{n}" for n in ("ovrl", "sig", "bak", "p808")] if "dnsmos" in wanted else [])
        for key in keys:
            values = [c[key] for c in per_clip.values() if key in c]
            result["metrics"][key] = ({"value": float(np.mean(values)), "n_clips": len(values),
                                       "n_failed": len(failed.get(key, {}))} if values else
                                      {"value": None, "error": "no clip could be scored"})
        if "spksim" in wanted and self.speaker is None:
            result["metrics"]["spksim"] = {"value": None, "error": MISSING_WEIGHTS}


def _new_run(gen: ClipFolder, settings: dict[str, Any]) -> dict[str, Any]:
    return {"name": gen.root.name, "generated": str(gen.root), "n_files": len(gen.clips), "settings": settings,
            "audio": audio_summary(gen),
            "metrics": {}, "per_clip": {cid: {"file": str(p)} for cid, p in gen.clips.items()},
            "issues": {"unreadable": {}, "unpaired_generated": [], "unpaired_reference": [],
                       "uncaptioned": [], "unmapped": {}, "failed": {}}}


def pooled_frechet(gen: dict, ref: dict, key: str) -> dict:
    """Fréchet distance of every vector of every clip pooled: {clip: {key: [..., D]}} on each side."""
    gen_x = [f[key].reshape(-1, f[key].shape[-1]) for f in gen.values()]
    ref_x = [f[key].reshape(-1, f[key].shape[-1]) for f in ref.values()]
    if not gen_x or not ref_x:
        raise DashflowError("no readable clips on one side")
    gx, rx = np.concatenate(gen_x), np.concatenate(ref_x)
    return {"value": frechet_distance_of(gx, rx), "n_generated": len(gen_x), "n_reference": len(ref_x),
            "n_vectors_generated": int(gx.shape[0]), "n_vectors_reference": int(rx.shape[0])}


def _kl(gen: dict, ref: dict, per_clip: dict) -> dict[str, dict]:
    """KL softmax and sigmoid over the basename pairs readable on both sides."""
    pairs = [cid for cid in gen if cid in ref]
    out = {}
    for kind in ("softmax", "sigmoid"):
        if not pairs:
            out[f"kl_{kind}"] = {"value": None,
                                 "error": "no generated clip shares a basename with a readable reference clip"}
            continue
        raw = kl_per_clip(np.stack([ref[c]["logits"] for c in pairs]),
                          np.stack([gen[c]["logits"] for c in pairs]), kind)
        values = np.maximum(raw, 0.0)  # a divergence is >= 0; below it is the formula's eps / missing terms
        for cid, value in zip(pairs, values, strict=True):
            per_clip[cid][f"kl_{kind}"] = float(value)
        out[f"kl_{kind}"] = {"value": float(values.mean()), "n_pairs": len(pairs),
                             "n_clamped": int((raw < 0).sum()), "raw_value": float(raw.mean())}
    return out


def _inhouse_frechet(gen: dict, ref: Extraction | None) -> dict:
    if ref is None:
        raise DashflowError("needs --reference")
    return pooled_frechet(gen, ref.features["inhouse"], "embedding")


def _prompt_sep(outputs: dict, captions: dict[str, str], sidecars: dict[str, dict]) -> dict:
    """Prompt separation over the clips with a prompt and a sidecar seed."""
    ids = [cid for cid in outputs if cid in captions and "seed" in sidecars.get(cid, {})]
    if not ids:
        raise DashflowError("no generated clip has both a prompt and a sidecar seed")
    values = prompt_separation(np.stack([outputs[cid]["embedding"] for cid in ids]), [captions[c] for c in ids],
                               [json.dumps(sidecars[c]["seed"]) for c in ids])
    return {"value": values.pop("separation"), **values, "n_clips": len(ids),
            "n_prompts": len({captions[c] for c in ids}), "n_without_seed_or_prompt": len(outputs) - len(ids)}


def _inception(gen: dict, splits: int, seed: int) -> dict:
    logits = np.stack([f["logits"] for f in gen.values()]) if gen else np.zeros((0, 527))
    mean, std = inception_score(logits, splits, seed)
    return {"value": mean, "std": std, "n_generated": int(logits.shape[0]), "splits": splits, "seed": seed}


def _guard(compute: Callable[[], dict]) -> dict:
    """A metric that cannot be computed is reported with its reason instead of a fake number."""
    try:
        return compute()
    except DashflowError as exc:
        return {"value": None, "error": str(exc)}
