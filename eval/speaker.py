"""Speaker similarity (SpkSim): cosine of GE2E speaker embeddings, as resemblyzer 0.1.4 computes them.

The weights are resemblyzer's ``pretrained.pt`` (Apache-2.0, bundled in its PyPI wheel): a
``--speaker-weights`` path, else the file of an installed ``resemblyzer`` distribution, found
through its package metadata without importing it (its import needs ``webrtcvad``). The wheel's
declared dependencies (``webrtcvad`` builds from source, ``typing`` is a stale backport) are not
needed here: ``pip install --no-deps resemblyzer`` is enough.

Reproduced from resemblyzer (``audio.py``, ``hparams.py``, ``voice_encoder.py``):

- volume normalised to -30 dBFS, only ever raised (``normalize_volume(increase_only=True)``);
- front end: power mel spectrogram (not log), 40 Slaney bands, 25 ms periodic-Hann frames every
  10 ms (``n_fft`` 400), centred frames with zero padding: ``librosa.feature.melspectrogram``
  defaults in librosa >= 0.10, which resemblyzer 0.1.4 installs today (older librosa padded by
  reflection, which changes the two edge frames only);
- partial utterances of 160 frames (1.6 s) every 77 frames (1.3 partials a second, about 52 %
  overlap); the last partial, zero-padded, is kept if the audio covers >= 75 % of it, and there
  is always at least one;
- network: 3-layer LSTM (256 hidden) over each partial, ``ReLU(Linear(256, 256))`` on the last
  layer's final hidden state, L2-normalised; the utterance embedding is the mean of the partial
  embeddings, L2-normalised again.

Not reproduced: ``trim_long_silences`` (webrtcvad voice-activity trimming of silences longer than
about 0.2 s), which would need ``webrtcvad``. Clips with long pauses therefore embed slightly
differently from resemblyzer's ``preprocess_wav`` + ``embed_utterance``; clips without them match.
"""

from __future__ import annotations

import functools
import os
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
from dashflow.eval.weights import sha256_file
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

from dashflow.errors import DashflowError
from dashflow.weights import load_strict
from dashflow.spectral import mel_filterbank

SAMPLE_RATE = 16000
N_MELS = 40
WINDOW = 400             # 25 ms, also the FFT size
HOP = 160                # 10 ms
PARTIAL_FRAMES = 160     # 1.6 s
PARTIAL_RATE = 1.3       # partials a second
MIN_COVERAGE = 0.75
TARGET_DBFS = -30.0
OFFICIAL_HIDDEN, OFFICIAL_LAYERS, OFFICIAL_EMBEDDING = 256, 3, 256
OFFICIAL_SHA256 = "39373b86598fa3da9fcddee6142382efe09777e8d37dc9c0561f41f0070f134e"  # resemblyzer 0.1.4
WEIGHTS_DISTRIBUTION = "resemblyzer"
WEIGHTS_IN_DISTRIBUTION = "resemblyzer/pretrained.pt"
# the GE2E loss's learned scale and offset: in the checkpoint, not part of the encoder
TRAINING_ONLY_KEYS = ("similarity_weight", "similarity_bias")
MISSING_WEIGHTS = ("no GE2E speaker-encoder weights: pass --speaker-weights PATH (resemblyzer's pretrained.pt) "
                   "or `pip install --no-deps resemblyzer`, whose wheel bundles them")

_MEL = mel_filterbank(SAMPLE_RATE, WINDOW, N_MELS).T.contiguous()  # [40, 201]


class GE2EEncoder(ModelMixin, ConfigMixin):
    """resemblyzer's ``VoiceEncoder`` network: mels [P, T, 40] -> L2-normalised embeddings [P, E].

    State-dict keys are resemblyzer's (``lstm.weight_ih_l0`` ... ``linear.bias``).
    """

    @register_to_config
    def __init__(self, hidden_size: int = OFFICIAL_HIDDEN, num_layers: int = OFFICIAL_LAYERS,
                 embedding_size: int = OFFICIAL_EMBEDDING):
        super().__init__()
        self.lstm = nn.LSTM(N_MELS, hidden_size, num_layers, batch_first=True)
        self.linear = nn.Linear(hidden_size, embedding_size)

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        _, (hidden, _) = self.lstm(mels)                    # hidden: [layers, P, H]
        embeddings = torch.relu(self.linear(hidden[-1]))    # [P, E]
        return nn.functional.normalize(embeddings, dim=-1)

    @property
    def is_official_size(self) -> bool:
        c = self.config
        return (c.hidden_size, c.num_layers, c.embedding_size) == (OFFICIAL_HIDDEN, OFFICIAL_LAYERS,
                                                                   OFFICIAL_EMBEDDING)

    @classmethod
    def from_weight_file(cls, path: str | Path) -> GE2EEncoder:
        """Build from resemblyzer's checkpoint (or a bare state dict); sizes are read from the tensors."""
        state = load_ge2e_state_dict(path)
        try:
            n_mels = state["lstm.weight_ih_l0"].shape[1]
            hidden = state["lstm.weight_hh_l0"].shape[1]
            embedding = state["linear.weight"].shape[0]
        except KeyError as exc:
            raise DashflowError(f"{path}: not a GE2E speaker-encoder state dict (no {exc.args[0]})") from None
        if n_mels != N_MELS:
            raise DashflowError(f"{path}: the encoder takes {n_mels} mel bands, the front end gives {N_MELS}")
        layers = sum(1 for k in state if k.startswith("lstm.weight_ih_l"))
        model = cls(hidden_size=int(hidden), num_layers=layers, embedding_size=int(embedding))
        load_strict(model, state, path)
        return model.eval()


def load_ge2e_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Encoder tensors of ``pretrained.pt`` (``{"step", "model_state", "optimizer_state"}``) or of a
    bare state dict, read with ``torch.load(weights_only=True)``; the GE2E loss's two scalars are dropped."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DashflowError(f"{path}: cannot load weights ({str(exc).strip().splitlines()[0]})") from None
    state = checkpoint.get("model_state", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DashflowError(f"{path}: not a state dict of tensors")
    return {k: v for k, v in state.items() if k not in TRAINING_ONLY_KEYS}


def find_weights(path: str | os.PathLike | None = None) -> Path | None:
    """``path`` (which must exist), else resemblyzer's bundled ``pretrained.pt``, else None."""
    if path is not None:
        chosen = Path(path).expanduser()
        if not chosen.is_file():
            raise DashflowError(f"speaker weights {chosen} not found")
        return chosen
    try:
        dist = metadata.distribution(WEIGHTS_DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return None
    for entry in dist.files or ():
        if entry.as_posix() == WEIGHTS_IN_DISTRIBUTION:
            found = Path(dist.locate_file(entry))
            return found if found.is_file() else None
    return None


def normalize_volume(wav: np.ndarray) -> np.ndarray:
    """Raise the level of a 16 kHz clip [S] to -30 dBFS RMS (never lower it); DashflowError if silent."""
    rms = float(np.sqrt(np.mean(np.square(wav, dtype=np.float64)))) if wav.size else 0.0
    if rms == 0.0:
        raise DashflowError("speaker similarity failed (silent signal)")
    gain_db = TARGET_DBFS - 20.0 * np.log10(rms)
    return wav * np.float32(10.0 ** (gain_db / 20.0)) if gain_db > 0 else wav


def mel_frames(wav: torch.Tensor) -> torch.Tensor:
    """Power mel spectrogram of a 16 kHz clip [S] -> [1 + S // 160, 40] (float32)."""
    window = torch.hann_window(WINDOW, periodic=True, dtype=torch.float32, device=wav.device)
    spec = torch.stft(wav.float(), n_fft=WINDOW, hop_length=HOP, window=window, center=True,
                      pad_mode="constant", return_complex=True)    # [201, T]
    power = spec.real.square() + spec.imag.square()
    return (_MEL.to(wav.device) @ power).T


def partial_step(rate: float = PARTIAL_RATE) -> int:
    """Frames between partial starts: 77 at 1.3 partials a second."""
    return int(np.round(SAMPLE_RATE / rate / HOP))


def partial_starts(n_samples: int, rate: float = PARTIAL_RATE, min_coverage: float = MIN_COVERAGE) -> list[int]:
    """First mel frame of each 160-frame partial utterance of a clip of ``n_samples`` (at least one)."""
    n_frames = int(np.ceil((n_samples + 1) / HOP))
    step = partial_step(rate)
    if not 0 < step <= PARTIAL_FRAMES:
        raise ValueError(f"partial rate {rate} gives a step of {step} frames; it must be in 1..{PARTIAL_FRAMES}")
    starts = list(range(0, max(1, n_frames - PARTIAL_FRAMES + step + 1), step))
    coverage = (n_samples - starts[-1] * HOP) / (PARTIAL_FRAMES * HOP)
    if coverage < min_coverage and len(starts) > 1:
        starts.pop()
    return starts


class SpeakerEncoder:
    """The GE2E encoder loaded once: :meth:`embed` a clip, :meth:`similarity` of a pair."""

    name = "speaker"

    def __init__(self, weights: str | Path, device: torch.device | str = "cpu"):
        weights = Path(weights)
        self.device = torch.device(device)
        self.model = GE2EEncoder.from_weight_file(weights).to(self.device)
        digest = sha256_file(weights)
        self.settings = {
            "model": "GE2E speaker encoder (resemblyzer 0.1.4 VoiceEncoder), "
                     f"{self.model.config.embedding_size}-d utterance embedding",
            "weights": str(weights), "sha256": digest, "official_file": digest == OFFICIAL_SHA256,
            "official_architecture": self.model.is_official_size, "sample_rate": SAMPLE_RATE,
            "preprocessing": f"volume raised to {TARGET_DBFS:g} dBFS (never lowered); no VAD silence trimming",
            "front_end": f"power mel, {N_MELS} Slaney bands, 25 ms periodic Hann, 10 ms hop, zero-padded centring",
            "partials": f"{PARTIAL_FRAMES} frames every {partial_step()} frames, last kept if >= "
                        f"{MIN_COVERAGE:.0%} covered; mean of partials, L2-normalised",
            "score": "cosine of the two utterance embeddings"}

    @torch.no_grad()
    def embed(self, wav: np.ndarray) -> np.ndarray:
        """16 kHz mono clip [S] -> L2-normalised utterance embedding [E] (float32)."""
        if np.ndim(wav) != 1:
            raise DashflowError(f"speaker embedding needs a mono clip [S], got shape {np.shape(wav)}")
        wav = normalize_volume(np.ascontiguousarray(wav, dtype=np.float32))
        starts = partial_starts(wav.shape[0])
        end = (starts[-1] + PARTIAL_FRAMES) * HOP
        if end >= wav.shape[0]:
            wav = np.pad(wav, (0, end - wav.shape[0]))
        mel = mel_frames(torch.from_numpy(wav).to(self.device))
        partials = self.model(torch.stack([mel[s:s + PARTIAL_FRAMES] for s in starts]))  # [P, E]
        mean = partials.mean(dim=0)
        norm = torch.linalg.vector_norm(mean)
        if norm == 0:
            raise DashflowError("speaker similarity failed (all-zero speaker embedding)")
        return (mean / norm).float().cpu().numpy()

    def similarity(self, reference: np.ndarray, estimate: np.ndarray) -> float:
        """Cosine of the utterance embeddings of two 16 kHz clips, in [0, 1] (embeddings are non-negative)."""
        return float(self.embed(reference) @ self.embed(estimate))


@functools.lru_cache(maxsize=2)
def _encoder(weights: Path) -> SpeakerEncoder:
    return SpeakerEncoder(weights)


def speaker_similarity(reference: np.ndarray, estimate: np.ndarray, weights: str | Path | None = None) -> float:
    """SpkSim of two 16 kHz mono clips with the GE2E encoder (loaded once per weights file)."""
    found = find_weights(weights)
    if found is None:
        raise DashflowError(MISSING_WEIGHTS)
    return _encoder(found.resolve()).similarity(reference, estimate)
