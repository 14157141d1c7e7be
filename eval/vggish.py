"""VGGish for FAD, as the papers compute it (torchvggish weights, no PCA, pre-activation 128-d).

Front end (Google's ``mel_features``): 16 kHz, 25 ms periodic-Hann frames every 10 ms, |rfft|
of 512 points, 64 HTK-mel bands over 125-7500 Hz, ``log(mel + 0.01)``, then 0.96 s examples
(96 frames) with a 0.96 s hop; a trailing partial example is dropped.

Network: torchvggish's ``VGG`` with the official state-dict keys (``features.{0,3,6,8,11,13}``,
``embeddings.{0,2,4}``) so ``vggish-10086976.pth`` loads strictly. The final ReLU of
``embeddings`` is left out, which gives Google's pre-activation embedding (torchvggish#24).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from dashflow.eval.weights import load_state_dict
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

from dashflow.errors import DashflowError
from dashflow.weights import load_strict

SAMPLE_RATE = 16000
WINDOW = 400          # 25 ms
HOP = 160             # 10 ms
N_FFT = 512
MEL_BINS = 64
FMIN, FMAX = 125.0, 7500.0
LOG_OFFSET = 0.01
EXAMPLE_FRAMES = 96   # 0.96 s examples, 0.96 s hop
# convolutions per stage; every stage ends in a 2x2 max-pool
STAGES = (1, 1, 2, 2)
OFFICIAL_CONV = (64, 128, 256, 256, 512, 512)
OFFICIAL_FC = (4096, 4096, 128)


def _hz_to_mel_htk(hz: np.ndarray) -> np.ndarray:
    return 1127.0 * np.log(1.0 + hz / 700.0)


def vggish_mel_matrix() -> np.ndarray:
    """HTK-mel triangles defined in the mel domain, DC row zeroed: [N_FFT // 2 + 1, MEL_BINS]."""
    bins_mel = _hz_to_mel_htk(np.linspace(0.0, SAMPLE_RATE / 2.0, N_FFT // 2 + 1))
    edges = np.linspace(_hz_to_mel_htk(FMIN), _hz_to_mel_htk(FMAX), MEL_BINS + 2)
    lower = (bins_mel[:, None] - edges[None, :-2]) / (edges[1:-1] - edges[:-2])
    upper = (edges[None, 2:] - bins_mel[:, None]) / (edges[2:] - edges[1:-1])
    matrix = np.maximum(0.0, np.minimum(lower, upper))
    matrix[0, :] = 0.0
    return matrix


_MEL = vggish_mel_matrix()
_WINDOW = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(WINDOW) / WINDOW)  # periodic Hann


def log_mel_examples(wav: np.ndarray) -> np.ndarray:
    """16 kHz mono wav [S] -> VGGish input examples [N, 1, 96, 64] (float32); N may be 0."""
    wav = np.asarray(wav, dtype=np.float64)
    if wav.shape[0] < WINDOW:
        return np.zeros((0, 1, EXAMPLE_FRAMES, MEL_BINS), np.float32)
    frames = np.lib.stride_tricks.sliding_window_view(wav, WINDOW)[::HOP]
    spectrum = np.abs(np.fft.rfft(frames * _WINDOW, N_FFT))
    log_mel = np.log(spectrum @ _MEL + LOG_OFFSET)
    n_examples = log_mel.shape[0] // EXAMPLE_FRAMES
    examples = log_mel[: n_examples * EXAMPLE_FRAMES].reshape(n_examples, EXAMPLE_FRAMES, MEL_BINS)
    return examples[:, None].astype(np.float32)


class VGGish(ModelMixin, ConfigMixin):
    """torchvggish's VGG without its last ReLU: examples [N, 1, 96, 64] -> embeddings [N, 128]."""

    @register_to_config
    def __init__(self, conv_channels: tuple[int, ...] = OFFICIAL_CONV,
                 fc_dims: tuple[int, ...] = OFFICIAL_FC):
        super().__init__()
        if len(conv_channels) != sum(STAGES) or len(fc_dims) != 3:
            raise ValueError("VGGish needs 6 conv widths and 3 fc widths")
        layers: list[nn.Module] = []
        widths = iter(conv_channels)
        in_ch = 1
        for n_convs in STAGES:
            for _ in range(n_convs):
                out_ch = next(widths)
                layers += [nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                in_ch = out_ch
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        self.features = nn.Sequential(*layers)
        shrink = 2 ** len(STAGES)
        flat = in_ch * (EXAMPLE_FRAMES // shrink) * (MEL_BINS // shrink)
        self.embeddings = nn.Sequential(
            nn.Linear(flat, fc_dims[0]), nn.ReLU(inplace=True),
            nn.Linear(fc_dims[0], fc_dims[1]), nn.ReLU(inplace=True),
            nn.Linear(fc_dims[1], fc_dims[2]),
        )

    def forward(self, examples: torch.Tensor) -> torch.Tensor:
        x = self.features(examples)                        # [N, C, 6, 4]
        x = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)  # TF's NHWC flatten order
        return self.embeddings(x)

    @property
    def is_official_size(self) -> bool:
        return tuple(self.config.conv_channels) == OFFICIAL_CONV and tuple(self.config.fc_dims) == OFFICIAL_FC

    @classmethod
    def from_weight_file(cls, path: str | Path) -> VGGish:
        """Build from a torchvggish state dict; layer widths are read from the tensors."""
        state = load_state_dict(path)
        conv_keys = _conv_layer_indices()
        try:
            convs = tuple(int(state[f"features.{i}.weight"].shape[0]) for i in conv_keys)
            fcs = tuple(int(state[f"embeddings.{i}.weight"].shape[0]) for i in (0, 2, 4))
        except KeyError as exc:
            raise DashflowError(f"{path}: not a VGGish state dict (no {exc.args[0]})") from None
        model = cls(conv_channels=convs, fc_dims=fcs)
        load_strict(model, state, path)
        return model.eval()


def _conv_layer_indices() -> list[int]:
    indices, i = [], 0
    for n_convs in STAGES:
        for _ in range(n_convs):
            indices.append(i)
            i += 2  # conv, relu
        i += 1      # pool
    return indices


@torch.no_grad()
def vggish_embeddings(model: VGGish, wav: np.ndarray, device: torch.device | str = "cpu") -> np.ndarray:
    """16 kHz wav [S] -> frame embeddings [N, 128] (float32), one per whole 0.96 s example."""
    examples = torch.from_numpy(log_mel_examples(wav)).to(device)
    if examples.shape[0] == 0:
        return np.zeros((0, model.config.fc_dims[-1]), np.float32)
    return model(examples).float().cpu().numpy()
