"""Speech quality metrics at 16 kHz: wideband PESQ, STOI, SI-SDR (paired) and DNSMOS P.835.

PESQ comes from the ``pesq`` package (ITU-T P.862.2 wideband MOS-LQO), STOI from ``pystoi``
(classic, not extended), DNSMOS from ``speechmos``, which ships Microsoft's ONNX models
(``sig_bak_ovr.onnx`` for SIG/BAK/OVRL, ``model_v8.onnx`` for P.808) and scores 9.01 s windows
with a 1 s hop, tiling shorter clips. All of them are imported when first used (extra ``eval``).
"""

from __future__ import annotations

import warnings

import numpy as np

from dashflow.errors import DashflowError

SAMPLE_RATE = 16000
ALIGN_RULES = ("reference", "uniflow")
# UniFlow's se.py crops both to the shorter when lengths differ by at most this, else zero-pads
UNIFLOW_CROP_LIMIT = 1600


def align(reference: np.ndarray, estimate: np.ndarray, rule: str = "reference") -> tuple[np.ndarray, np.ndarray]:
    """Make a pair equally long.

    ``reference``: trim or zero-pad the estimate to the reference length (codec round trips).
    ``uniflow``: crop both to the shorter if they differ by <= 1600 samples, else zero-pad the
    shorter (UniFlow's ``evaluation/se.py``).
    """
    n_ref, n_est = reference.shape[0], estimate.shape[0]
    if rule == "reference":
        target = n_ref
    elif rule == "uniflow":
        target = min(n_ref, n_est) if abs(n_ref - n_est) <= UNIFLOW_CROP_LIMIT else max(n_ref, n_est)
    else:
        raise ValueError(f"unknown alignment rule {rule!r}; use one of {ALIGN_RULES}")
    return _fit(reference, target), _fit(estimate, target)


def _fit(wav: np.ndarray, n: int) -> np.ndarray:
    return wav[:n] if wav.shape[0] >= n else np.pad(wav, (0, n - wav.shape[0]))


def pesq_wb(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Wideband PESQ (MOS-LQO, about 1.0-4.6) of 16 kHz signals; raises DashflowError on failure."""
    from pesq import PesqError, pesq

    _require_sound(reference, "PESQ")
    _require_sound(estimate, "PESQ")
    try:
        return float(pesq(SAMPLE_RATE, reference.astype(np.float64), estimate.astype(np.float64), "wb"))
    except PesqError as exc:
        raise DashflowError(f"PESQ failed ({type(exc).__name__})") from None


def stoi(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Short-time objective intelligibility in [0, 1] of 16 kHz signals.

    A silent reference, or too few non-silent frames (pystoi then returns 1e-5 with only a
    warning), is raised as a failure instead of being averaged in.
    """
    from pystoi import stoi as pystoi_stoi

    _require_sound(reference, "STOI")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = pystoi_stoi(reference.astype(np.float64), estimate.astype(np.float64), SAMPLE_RATE, extended=False)
    if any("Not enough STFT frames" in str(w.message) for w in caught):
        raise DashflowError("STOI failed (too little non-silent speech)")
    return float(value)


def _require_sound(wav: np.ndarray, metric: str) -> None:
    if not np.abs(wav).max(initial=0.0):
        raise DashflowError(f"{metric} failed (silent signal)")


def si_sdr(reference: np.ndarray, estimate: np.ndarray, eps: float = 1e-8) -> float:
    """Scale-invariant SDR in dB (zero-mean signals; higher is better); undefined for silence."""
    _require_sound(reference - reference.mean(), "SI-SDR")
    ref = reference.astype(np.float64) - reference.mean()
    est = estimate.astype(np.float64) - estimate.mean()
    scale = (est @ ref + eps) / (ref @ ref + eps)
    target = scale * ref
    residual = est - target
    return float(10.0 * np.log10((target @ target + eps) / (residual @ residual + eps)))


def dnsmos(wav: np.ndarray) -> dict[str, float]:
    """DNSMOS P.835 of a 16 kHz clip: ``{"ovrl", "sig", "bak", "p808"}`` MOS values.

    Samples are clipped to [-1, 1], which speechmos requires.
    """
    try:
        from speechmos import dnsmos as speechmos_dnsmos
    except ImportError:
        raise DashflowError("DNSMOS needs the speechmos and onnxruntime packages "
                            "(pip install 'dashflow[eval]')") from None
    scores = speechmos_dnsmos.run(np.clip(wav, -1.0, 1.0).astype(np.float32), sr=SAMPLE_RATE)
    return {name: float(scores[f"{name}_mos"]) for name in ("ovrl", "sig", "bak", "p808")}


def speech_scores(reference: np.ndarray, estimate: np.ndarray) -> dict[str, float]:
    """Wide-band PESQ and STOI of one clip pair [S] at 16 kHz; a metric whose package is missing,
    or that rejects the clip (silence), is left out."""
    import importlib.util

    scores = {}
    for name, package, metric in (("pesq", "pesq", pesq_wb), ("stoi", "pystoi", stoi)):
        if importlib.util.find_spec(package) is None:
            continue
        try:
            scores[name] = metric(np.asarray(reference, dtype=np.float64), np.asarray(estimate, dtype=np.float64))
        except DashflowError:
            continue
    return scores
