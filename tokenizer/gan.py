"""GAN training of the DashengTokenizer or LoSATok (acoustic branch [+ KL head] + Vocos decoder)
with Accelerate: the recipe's config, the tokenizer as a generator, the discriminator and their two
optimizers, one training step and validation. ``recipes/tokenizer_gan.py`` is the loop.

One step: the generator reconstructs a batch of random crops; the discriminator (MPD +
multi-frequency) takes a hinge step on real vs detached fake; the generator takes a step on
45 L_sem + 45 L_mel + L_adv + L_fm. The Dasheng semantic encoder is frozen and stays in eval
mode (it is in no optimizer). LoSATok (``model.kind=losatok``) adds its low-dimensional semantic
term and the KL term (45 (L_H + L_L) + 1e-2 KL) with a frozen teacher and SemBo. Validation scores
come from the caller (so this package never imports ``eval``).
"""

from __future__ import annotations

import math
import sys
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from dashflow.tokenizer.discriminators import TokenizerDiscriminator
from dashflow.tokenizer.losses import (
    GeneratorLoss,
    MelMagnitude,
    MultiScaleMelLoss,
    discriminator_hinge_loss,
)
from dashflow.tokenizer.losatok import LoSATok
from dashflow.tokenizer.model import DashengTokenizer
from dashflow.tokenizer.sembo import SemanticBottleneck, load_teacher
from omegaconf import MISSING
from torch import nn

from dashflow.data import AudioClipDataset, collate_clips
from dashflow.errors import DashflowError
from dashflow.manifests import read_manifest
from dashflow.training import (
    OptimConfig,
    TrainConfig,
    adamw,
    check_training,
    log_audio,
    log_spectrogram,
    lr_schedule,
    optimizer_step,
)

# ----------------------------------------------------------------------------- config

@dataclass
class ModelConfig:
    kind: str = "dashengtokenizer"   # dashengtokenizer | losatok
    preset: str = "paper"            # tokenizer preset: paper | base | 1.2b | demo | tiny
    init_from: str = ""              # tokenizer folder to start from (e.g. the official weights)
    semantic_checkpoint: str = ""    # PyPI dasheng checkpoint for the frozen semantic encoder
    teacher: str = ""                # losatok: its frozen semantic encoder (a DashengTokenizer folder or dasheng .pt)
    sembo: str = ""                  # losatok: the trained SemBo folder (recipes/sembo.py)
    discriminator: str = "paper"     # discriminator preset: paper | tiny
    gradient_checkpointing: bool = False


@dataclass
class DataConfig:
    train: str = MISSING             # .jsonl manifest, or WebDataset shards (folder/glob/braces)
    val_manifest: str = ""           # "" holds out val_clips clips spread through data.train
    val_clips: int = 16
    val_seconds: float = 4.0         # each validation clip's first val_seconds (zero-padded)
    crop_seconds: float = 2.0
    batch_size: int = 16             # per process
    num_workers: int = 4


@dataclass
class GANOptimConfig(OptimConfig):
    lr: float = 5e-4                 # generator peak LR (AdamW)
    disc_lr: float = 5e-4            # discriminator peak LR (AdamW)
    betas: list[float] = field(default_factory=lambda: [0.8, 0.9])
    schedule: str = "cosine"         # to final_lr_ratio (10 % of the peak) at max_steps
    warmup_steps: int = 0


@dataclass
class LossConfig:
    lambda_sem: float = 45.0
    lambda_mel: float = 45.0
    lambda_adv: float = 1.0
    lambda_fm: float = 1.0
    lambda_kl: float = 1e-2          # losatok only
    mel: str = "xcodec2"             # mel loss layout: xcodec2 (7 scales) | vocos (1 scale)
    mpd_weight: float = 1.0          # weight of the period family in L_D, L_adv, L_fm
    mfd_weight: float = 1.0          # weight of the multi-frequency family
    disc_start_step: int = 0         # steps of reconstruction-only training before the GAN


@dataclass
class GANTrainConfig(TrainConfig):
    output_dir: str = "runs/tokenizer"
    max_steps: int = 1_000_000
    seed: int = 4444
    # RAE-style latent noise: the decoder sees z + s * std(z) * eps, s ~ U(0, noise_tau) per
    # clip (std over the clip's latent), so it tolerates imperfect (e.g. DiT-sampled) latents.
    # 0 = off (the seed paper's recipe); RAE uses 0.8 on normalised latents.
    noise_tau: float = 0.0
    val_every: int = 5000
    keep_checkpoints: int = 3        # 0 keeps all
    audio_samples: int = 2           # validation clips logged as audio + mel images
    speech_metrics: bool = False     # PESQ / STOI in validation (needs pesq, pystoi)


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: GANOptimConfig = field(default_factory=GANOptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: GANTrainConfig = field(default_factory=GANTrainConfig)


def check_settings(cfg: Config) -> None:
    """Raise one DashflowError line for settings the recipe cannot run with."""
    check_training(cfg.train, cfg.optim, {"train.val_every": cfg.train.val_every,
                                          "data.batch_size": cfg.data.batch_size,
                                          "data.crop_seconds": cfg.data.crop_seconds,
                                          "data.val_seconds": cfg.data.val_seconds})
    if cfg.optim.gradient_accumulation_steps != 1:
        raise DashflowError("optim.gradient_accumulation_steps: the GAN steps both networks on every "
                            "batch; raise data.batch_size instead")


# ----------------------------------------------------------------------------- pieces

def split_data(cfg: DataConfig) -> tuple[str | list[dict], list[dict]]:
    """(training source, held-out validation records)."""
    if cfg.val_manifest:
        return cfg.train, read_manifest(cfg.val_manifest)[:cfg.val_clips]
    if not cfg.train.endswith((".jsonl", ".json")):
        raise DashflowError("data.val_manifest is required when training from shards")
    records = read_manifest(cfg.train)
    if len(records) <= cfg.val_clips:
        raise DashflowError(f"{cfg.train}: {len(records)} clips leave none for training after "
                            f"holding out data.val_clips={cfg.val_clips}")
    held = {len(records) * i // cfg.val_clips for i in range(cfg.val_clips)}  # spread out
    return ([r for i, r in enumerate(records) if i not in held],
            [r for i, r in enumerate(records) if i in held])


class Reconstructor(nn.Module):
    """The tokenizer as a generator: wav [B, S] -> (recon [B, S], encoding), with optional
    latent noise between encode and decode (one module so DDP/FSDP see a single forward)."""

    def __init__(self, tokenizer: DashengTokenizer | LoSATok):
        super().__init__()
        self.tokenizer = tokenizer

    def forward(self, wav: torch.Tensor, lengths: torch.Tensor, noise_tau: float = 0.0):
        encoding = self.tokenizer.encode(wav, lengths)
        latents = encoding.latents
        if noise_tau > 0:
            scale = torch.rand(latents.shape[0], 1, 1, device=latents.device) * noise_tau
            scale = scale * latents.detach().float().std(dim=(1, 2), keepdim=True)
            latents = latents + (scale * torch.randn_like(latents.float())).to(latents.dtype)
        recon = self.tokenizer.decode(latents)
        size = wav.shape[-1]
        return F.pad(recon, (0, max(0, size - recon.shape[-1])))[:, :size], encoding


def build_tokenizer(cfg: ModelConfig) -> DashengTokenizer | LoSATok:
    kinds = {"dashengtokenizer": DashengTokenizer, "losatok": LoSATok}
    if cfg.kind not in kinds:
        raise DashflowError(f"model.kind must be one of {', '.join(kinds)}, got {cfg.kind!r}")
    cls = kinds[cfg.kind]
    tokenizer = cls.from_pretrained(cfg.init_from) if cfg.init_from else cls.from_preset(cfg.preset)
    if cfg.kind == "losatok":
        if not cfg.init_from and not (cfg.sembo and cfg.teacher):
            raise DashflowError("LoSATok trains on a frozen teacher: set model.teacher and model.sembo, "
                                "or model.init_from")
        tokenizer.load_frozen_parts(load_teacher(cfg.teacher).state_dict() if cfg.teacher else None,
                                    SemanticBottleneck.from_pretrained(cfg.sembo) if cfg.sembo else None)
    elif cfg.semantic_checkpoint:
        tokenizer.load_semantic_checkpoint(cfg.semantic_checkpoint)
    elif not cfg.init_from and cfg.preset != "tiny":
        print("warning: the frozen semantic encoder is randomly initialised; set "
              "model.init_from or model.semantic_checkpoint", file=sys.stderr)
    if cfg.gradient_checkpointing:
        tokenizer.enable_gradient_checkpointing()
    return tokenizer.train()


def split_real_fake(outputs: dict, batch: int) -> tuple[dict, dict]:
    """Discriminator outputs on cat([real, fake]) -> (real outputs, fake outputs)."""
    def part(sl: slice) -> dict:
        return {name: ([x[sl] for x in logits], [[f[sl] for f in maps] for maps in features])
                for name, (logits, features) in outputs.items()}
    return part(slice(None, batch)), part(slice(batch, None))


@dataclass
class GAN:
    """Everything a training step touches, prepared by Accelerate."""

    generator: nn.Module          # Reconstructor
    discriminator: nn.Module      # TokenizerDiscriminator
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    sched_g: object
    sched_d: object
    generator_loss: GeneratorLoss
    family_weights: dict[str, float]


def build_gan(cfg: Config, accelerator) -> GAN:
    """Tokenizer + discriminator, their AdamW optimisers and cosine schedules, the G loss."""
    tokenizer = build_tokenizer(cfg.model)
    discriminator = TokenizerDiscriminator.from_preset(cfg.model.discriminator)
    family_weights = {"mpd": cfg.loss.mpd_weight, "mfd": cfg.loss.mfd_weight}
    mel_loss = MultiScaleMelLoss.preset(cfg.loss.mel).to(accelerator.device)
    generator_loss = GeneratorLoss(cfg.loss.lambda_sem, cfg.loss.lambda_mel, cfg.loss.lambda_adv,
                                   cfg.loss.lambda_fm, mel_loss, family_weights, cfg.loss.lambda_kl)
    opt_g = adamw(tokenizer.trainable_parameters(), cfg.optim)
    opt_d = adamw(discriminator.parameters(), cfg.optim, lr=cfg.optim.disc_lr)
    sched_g = lr_schedule(opt_g, cfg.optim, cfg.train.max_steps)
    sched_d = lr_schedule(opt_d, cfg.optim, max(1, cfg.train.max_steps - cfg.loss.disc_start_step))
    prepared = accelerator.prepare(Reconstructor(tokenizer), discriminator, opt_g, opt_d,
                                   sched_g, sched_d)
    return GAN(*prepared, generator_loss, family_weights)


def train_step(accelerator, gan: GAN, wav: torch.Tensor, lengths: torch.Tensor, cfg: Config,
               adversarial: bool) -> dict[str, torch.Tensor]:
    """One discriminator step (when ``adversarial``) then one generator step on wav [B, S]
    (valid ``lengths`` [B]); returns the losses and gradient norms as device tensors."""
    logs: dict[str, torch.Tensor] = {}
    with accelerator.autocast():
        recon, encoding = gan.generator(wav, lengths, cfg.train.noise_tau)

    # discriminator: real vs detached reconstruction, one batch
    if adversarial:
        with accelerator.autocast():
            real, fake = split_real_fake(gan.discriminator(torch.cat([wav, recon.detach()])), len(wav))
            loss_d, d_parts = discriminator_hinge_loss(real, fake, gan.family_weights)
        gan.opt_d.zero_grad(set_to_none=True)  # drops what the last generator step left in D
        accelerator.backward(loss_d)
        logs["grad_norm_d"], _ = optimizer_step(accelerator, gan.discriminator, gan.opt_d, gan.sched_d,
                                                cfg.optim.grad_clip)
        logs.update({"loss_d": loss_d, **{f"d_{k}": v for k, v in d_parts.items()}})

    # generator: semantic + mel (+ adversarial + feature matching against the updated D)
    with accelerator.autocast():
        real = fake = None
        if adversarial:
            real, fake = split_real_fake(gan.discriminator(torch.cat([wav, recon])), len(wav))
        loss_g, g_parts = gan.generator_loss(recon, wav, encoding, real, fake)
    accelerator.backward(loss_g)
    logs["grad_norm_g"], _ = optimizer_step(accelerator, gan.generator, gan.opt_g, gan.sched_g,
                                            cfg.optim.grad_clip)
    return logs | {"loss_g": loss_g, **g_parts}


@torch.no_grad()
def validate(accelerator, generator, val_set: AudioClipDataset, cfg: Config, step: int,
             score: Callable[[torch.Tensor, torch.Tensor], dict[str, float]], score_names: Sequence[str],
             min_samples: int) -> dict[str, float]:
    """``val/<name>``: the mean of each of ``score_names`` over the held-out clips, where
    ``score(reference [S], reconstruction [S])`` gives {name: value} (mel distance, PESQ, ...) and
    may leave a name out for a clip. Each process takes every num_processes-th clip; the first
    clips are logged as audio and mel images."""
    generator.eval()
    size, world = cfg.data.batch_size, accelerator.num_processes
    mine = list(range(accelerator.process_index, len(val_set), world))
    scores: dict[str, list[float]] = defaultdict(list)
    image_mel = MelMagnitude(n_fft=1024, hop_length=160, n_mels=80).to(accelerator.device)
    # every process runs as many forwards as the busiest one (sharded models gather in each);
    # a process out of clips re-runs clip 0 and scores nothing
    for start in range(0, math.ceil(len(val_set) / world), size):
        chunk = mine[start:start + size]
        batch = collate_clips([val_set[i] for i in chunk or [0]])
        wav, lengths = batch["audio"].to(accelerator.device), batch["length"].tolist()
        with accelerator.autocast():
            recon, _ = generator(wav, batch["length"].to(wav.device).clamp(min=min_samples))
        recon = recon.float()
        for i, n in enumerate(lengths[:len(chunk)]):
            for name, value in score(wav[i, :n], recon[i, :n]).items():
                scores[name].append(value)
            if start == 0 and i < cfg.train.audio_samples and accelerator.is_main_process:
                for kind, audio in (("target", wav[i, :n]), ("recon", recon[i, :n])):
                    log_audio(accelerator, f"val/{i}/{kind}", audio, step)
                    mel = image_mel(audio[None])[0].clamp(min=1e-5).log()
                    log_spectrogram(accelerator, f"val/{i}/{kind}_mel", mel, step)
    generator.train()
    return {f"val/{name}": _global_mean(accelerator, scores[name]) for name in score_names}


def _global_mean(accelerator, values: list[float]) -> float:
    local = torch.tensor([sum(values), float(len(values))], device=accelerator.device)
    total = accelerator.reduce(local, reduction="sum")
    return float(total[0] / total[1]) if total[1] > 0 else float("nan")


