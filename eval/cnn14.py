"""PANNs Cnn14 (16 kHz) for FD, KL and IS: 2048-d ``ReLU(fc1)`` features and 527 logits.

The module tree and key names are those of ``panns_inference`` / ``audioldm_eval`` (including
torchlibrosa's frozen DFT kernels ``spectrogram_extractor.stft.conv_{real,imag}.weight`` and mel
matrix ``logmel_extractor.melW``), so ``Cnn14_16k_mAP=0.438.pth`` loads strictly. The front end
computes what torchlibrosa computes with those tensors: a centred, reflect-padded power STFT
(Hann 512, hop 160), 64 Slaney mels over 50-8000 Hz, ``10 log10(max(mel, 1e-10))``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from dashflow.eval.weights import load_state_dict
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

from dashflow.errors import DashflowError
from dashflow.weights import load_strict
from dashflow.spectral import mel_filterbank

OFFICIAL_CHANNELS = (64, 128, 256, 512, 1024, 2048)
AMIN = 1e-10


class _DFTConv(nn.Module):
    """torchlibrosa's STFT as two frozen Conv1d DFT banks (real and imaginary parts)."""

    def __init__(self, n_fft: int, hop: int):
        super().__init__()
        bins = n_fft // 2 + 1
        window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)  # periodic Hann
        phase = 2 * np.pi * np.outer(np.arange(bins), np.arange(n_fft)) / n_fft
        self.conv_real = nn.Conv1d(1, bins, n_fft, stride=hop, bias=False)
        self.conv_imag = nn.Conv1d(1, bins, n_fft, stride=hop, bias=False)
        self.conv_real.weight.data = torch.tensor(np.cos(phase) * window, dtype=torch.float32)[:, None]
        self.conv_imag.weight.data = torch.tensor(-np.sin(phase) * window, dtype=torch.float32)[:, None]
        self.requires_grad_(False)


class _Spectrogram(nn.Module):
    def __init__(self, n_fft: int, hop: int):
        super().__init__()
        self.n_fft = n_fft
        self.stft = _DFTConv(n_fft, hop)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """wav [B, S] -> power spectrogram [B, 1, T, n_fft // 2 + 1]."""
        x = F.pad(wav[:, None], (self.n_fft // 2, self.n_fft // 2), mode="reflect")
        power = self.stft.conv_real(x) ** 2 + self.stft.conv_imag(x) ** 2
        return power.transpose(1, 2)[:, None]


class _LogMel(nn.Module):
    def __init__(self, sample_rate: int, n_fft: int, mel_bins: int, fmin: float, fmax: float):
        super().__init__()
        melw = mel_filterbank(sample_rate, n_fft, mel_bins, fmin, fmax)  # [F, mel_bins]
        self.melW = nn.Parameter(melw, requires_grad=False)

    def forward(self, power: torch.Tensor) -> torch.Tensor:
        """[B, 1, T, F] -> log-mel in dB [B, 1, T, mel_bins] (ref 1.0, no top_db)."""
        return 10.0 * torch.log10(torch.clamp(power @ self.melW, min=AMIN))


class _ConvBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.bn2 = nn.BatchNorm2d(out_ch)

    def forward(self, x: torch.Tensor, pool: int) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return F.avg_pool2d(x, kernel_size=pool)


class Cnn14(ModelMixin, ConfigMixin):
    """Cnn14 in eval mode: wav [B, S] at ``sample_rate`` -> features [B, 2048], logits [B, 527]."""

    @register_to_config
    def __init__(self, sample_rate: int = 16000, window_size: int = 512, hop_size: int = 160,
                 mel_bins: int = 64, fmin: float = 50.0, fmax: float = 8000.0,
                 channels: tuple[int, ...] = OFFICIAL_CHANNELS, classes_num: int = 527):
        super().__init__()
        if len(channels) != 6:
            raise ValueError("Cnn14 has six conv blocks")
        self.spectrogram_extractor = _Spectrogram(window_size, hop_size)
        self.logmel_extractor = _LogMel(sample_rate, window_size, mel_bins, fmin, fmax)
        self.bn0 = nn.BatchNorm2d(mel_bins)
        in_ch = 1
        for i, out_ch in enumerate(channels, start=1):
            setattr(self, f"conv_block{i}", _ConvBlock(in_ch, out_ch))
            in_ch = out_ch
        self.fc1 = nn.Linear(in_ch, in_ch)
        self.fc_audioset = nn.Linear(in_ch, classes_num)

    def forward(self, wav: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.logmel_extractor(self.spectrogram_extractor(wav))  # [B, 1, T, M]
        x = self.bn0(x.transpose(1, 3)).transpose(1, 3)
        for i in range(1, 7):
            x = getattr(self, f"conv_block{i}")(x, pool=2 if i < 6 else 1)
        x = x.mean(dim=3)                                # over frequency
        x = x.max(dim=2).values + x.mean(dim=2)          # over time
        features = F.relu(self.fc1(x))
        return features, self.fc_audioset(features)

    @property
    def is_official_size(self) -> bool:
        return tuple(self.config.channels) == OFFICIAL_CHANNELS and self.config.classes_num == 527

    @classmethod
    def from_weight_file(cls, path: str | Path) -> Cnn14:
        """Build the 16 kHz Cnn14 from a PANNs checkpoint; block widths are read from the tensors."""
        state = load_state_dict(path)
        try:
            channels = tuple(int(state[f"conv_block{i}.conv1.weight"].shape[0]) for i in range(1, 7))
            classes = int(state["fc_audioset.weight"].shape[0])
            mel_bins = int(state["bn0.weight"].shape[0])
        except KeyError as exc:
            raise DashflowError(f"{path}: not a Cnn14 state dict (no {exc.args[0]})") from None
        model = cls(channels=channels, classes_num=classes, mel_bins=mel_bins)
        load_strict(model, state, path)
        return model.eval()


@torch.no_grad()
def cnn14_outputs(model: Cnn14, wav: np.ndarray, device: torch.device | str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """One clip [S] at the model's rate -> (features [2048], logits [527]), float32."""
    x = torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32))[None].to(device)
    features, logits = model(x)
    return features[0].float().cpu().numpy(), logits[0].float().cpu().numpy()
