"""Train the DashengTokenizer (acoustic branch + Vocos decoder) as a GAN with Accelerate.

    accelerate launch recipes/tokenizer.py --config recipes/configs/tokenizer/paper.yaml \\
        data.train=corpus/train.jsonl [dotted.key=value ...]

Hardware comes from the Accelerate config: ``--config_file recipes/accelerate/{single_gpu,
multi_gpu,fsdp,cpu}.yaml`` (or ``torchrun`` with ``ACCELERATE_USE_CPU=true`` for several CPU
processes, as the tests do).

One step: the generator reconstructs a batch of random crops; the discriminator (MPD +
multi-frequency) takes a hinge step on real vs detached fake; the generator takes a step on
45 L_sem + 45 L_mel + L_adv + L_fm. The Dasheng semantic encoder is frozen and stays in eval
mode (it is in no optimizer). Checkpoints resume exactly (step, optimizers, schedulers, RNG,
data position); ``<output_dir>/metrics.jsonl`` holds every logged number; the trained
tokenizer is exported with ``save_pretrained`` to ``<output_dir>/final``.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

# This script shares its name with the ``tokenizer`` package: keep its own folder off the
# import path so ``import tokenizer`` finds the package, not this file.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import torch
import torch.nn.functional as F
from accelerate.utils import send_to_device, set_seed
from omegaconf import MISSING
from torch import nn
from tqdm.auto import tqdm

from dashflow.config import recipe_config
from dashflow.data import (
    AudioClipDataset,
    build_clip_loader,
    collate_clips,
    read_manifest,
)
from dashflow.errors import DashflowError
from dashflow.training import (
    METRICS_NAME,
    MetricsLog,
    build_accelerator,
    cosine_schedule,
    init_trackers,
    log_audio,
    log_spectrogram,
    resume_training,
    save_checkpoint,
)
from tokenizer.discriminators import TokenizerDiscriminator
from tokenizer.losses import (
    GeneratorLoss,
    MelMagnitude,
    MultiScaleMelLoss,
    discriminator_hinge_loss,
)
from tokenizer.model import DashengTokenizer

# ----------------------------------------------------------------------------- config

@dataclass
class ModelConfig:
    preset: str = "paper"            # tokenizer preset: paper | base | 1.2b | tiny
    init_from: str = ""              # tokenizer folder to start from (e.g. the official weights)
    semantic_checkpoint: str = ""    # PyPI dasheng checkpoint for the frozen semantic encoder
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
class OptimConfig:
    lr: float = 5e-4                 # generator peak LR (AdamW)
    disc_lr: float = 5e-4            # discriminator peak LR (AdamW)
    betas: list[float] = field(default_factory=lambda: [0.8, 0.9])
    weight_decay: float = 0.01
    warmup_steps: int = 0
    final_lr_ratio: float = 0.1      # cosine decay to 10 % of the peak
    grad_clip: float = 1.0


@dataclass
class LossConfig:
    lambda_sem: float = 45.0
    lambda_mel: float = 45.0
    lambda_adv: float = 1.0
    lambda_fm: float = 1.0
    mel: str = "xcodec2"             # mel loss layout: xcodec2 (7 scales) | vocos (1 scale)
    mpd_weight: float = 1.0          # weight of the period family in L_D, L_adv, L_fm
    mfd_weight: float = 1.0          # weight of the multi-frequency family
    disc_start_step: int = 0         # steps of reconstruction-only training before the GAN


@dataclass
class TrainConfig:
    output_dir: str = "runs/tokenizer"
    max_steps: int = 1_000_000
    seed: int = 4444
    mixed_precision: str = "auto"    # auto = bf16 on CUDA, none on CPU
    # RAE-style latent noise: the decoder sees z + s * std(z) * eps, s ~ U(0, noise_tau) per
    # clip (std over the clip's latent), so it tolerates imperfect (e.g. DiT-sampled) latents.
    # 0 = off (the seed paper's recipe); RAE uses 0.8 on normalised latents.
    noise_tau: float = 0.0
    log_every: int = 50
    val_every: int = 5000
    checkpoint_every: int = 5000
    keep_checkpoints: int = 3        # 0 keeps all
    resume: str = "latest"           # latest | "" (fresh) | a step_* folder
    audio_samples: int = 2           # validation clips logged as audio + mel images
    speech_metrics: bool = False     # PESQ / STOI in validation (needs pesq, pystoi)


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


# ----------------------------------------------------------------------------- pieces

class Reconstructor(nn.Module):
    """The tokenizer as a generator: wav [B, S] -> (recon [B, S], encoding), with optional
    latent noise between encode and decode (one module so DDP/FSDP see a single forward)."""

    def __init__(self, tokenizer: DashengTokenizer):
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


def build_tokenizer(cfg: ModelConfig) -> DashengTokenizer:
    tokenizer = (DashengTokenizer.from_pretrained(cfg.init_from) if cfg.init_from
                 else DashengTokenizer.from_preset(cfg.preset))
    if cfg.semantic_checkpoint:
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


def speech_scores(reference: torch.Tensor, estimate: torch.Tensor) -> dict[str, float]:
    """Wide-band PESQ and STOI of one clip pair [S] at 16 kHz (``eval.enhancement``); a metric
    whose package is missing, or that rejects the clip (silence), is left out."""
    from eval.enhancement import pesq_wb, stoi

    scores = {}
    for name, package, metric in (("pesq", "pesq", pesq_wb), ("stoi", "pystoi", stoi)):
        if importlib.util.find_spec(package) is None:
            continue
        try:
            scores[name] = metric(reference.double().numpy(), estimate.double().numpy())
        except DashflowError:
            continue
    return scores


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
                                   cfg.loss.lambda_fm, mel_loss, family_weights)
    adamw = dict(betas=tuple(cfg.optim.betas), weight_decay=cfg.optim.weight_decay)
    opt_g = torch.optim.AdamW(tokenizer.trainable_parameters(), cfg.optim.lr, **adamw)
    opt_d = torch.optim.AdamW(discriminator.parameters(), cfg.optim.disc_lr, **adamw)
    sched_g = cosine_schedule(opt_g, cfg.train.max_steps, cfg.optim.warmup_steps,
                              cfg.optim.final_lr_ratio)
    sched_d = cosine_schedule(opt_d, max(1, cfg.train.max_steps - cfg.loss.disc_start_step),
                              cfg.optim.warmup_steps, cfg.optim.final_lr_ratio)
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
        gan.opt_d.zero_grad(set_to_none=True)
        accelerator.backward(loss_d)
        logs["grad_norm_d"] = accelerator.clip_grad_norm_(gan.discriminator.parameters(),
                                                          cfg.optim.grad_clip)
        gan.opt_d.step()
        gan.sched_d.step()
        logs.update({"loss_d": loss_d, **{f"d_{k}": v for k, v in d_parts.items()}})

    # generator: semantic + mel (+ adversarial + feature matching against the updated D)
    with accelerator.autocast():
        real = fake = None
        if adversarial:
            real, fake = split_real_fake(gan.discriminator(torch.cat([wav, recon])), len(wav))
        loss_g, g_parts = gan.generator_loss(recon, wav, encoding.semantic, encoding.acoustic,
                                             encoding.mask, real, fake)
    gan.opt_g.zero_grad(set_to_none=True)
    accelerator.backward(loss_g)
    logs["grad_norm_g"] = accelerator.clip_grad_norm_(gan.generator.parameters(),
                                                      cfg.optim.grad_clip)
    gan.opt_g.step()
    gan.sched_g.step()
    return logs | {"loss_g": loss_g, **g_parts}


@torch.no_grad()
def validate(accelerator, generator, val_set: AudioClipDataset, cfg: Config, step: int,
             mel_distance: MultiScaleMelLoss, image_mel: MelMagnitude, min_samples: int) -> dict:
    """Mean multi-scale mel distance (and PESQ/STOI) over the held-out clips, each process
    taking every num_processes-th clip; logs the first clips as audio and mel images."""
    generator.eval()
    size, world = cfg.data.batch_size, accelerator.num_processes
    mine = list(range(accelerator.process_index, len(val_set), world))
    scores: dict[str, list[float]] = {"mel_distance": [], "pesq": [], "stoi": []}
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
            scores["mel_distance"].append(float(mel_distance(recon[i:i + 1, :n], wav[i:i + 1, :n])))
            if cfg.train.speech_metrics:
                for name, value in speech_scores(wav[i, :n].cpu(), recon[i, :n].cpu()).items():
                    scores[name].append(value)
            if start == 0 and i < cfg.train.audio_samples and accelerator.is_main_process:
                for kind, audio in (("target", wav[i, :n]), ("recon", recon[i, :n])):
                    log_audio(accelerator, f"val/{i}/{kind}", audio, step)
                    mel = image_mel(audio[None])[0].clamp(min=1e-5).log()
                    log_spectrogram(accelerator, f"val/{i}/{kind}_mel", mel, step)
    generator.train()
    names = ["mel_distance"] + (["pesq", "stoi"] if cfg.train.speech_metrics else [])
    return {f"val/{name}": _global_mean(accelerator, scores[name]) for name in names}


def _global_mean(accelerator, values: list[float]) -> float:
    local = torch.tensor([sum(values), float(len(values))], device=accelerator.device)
    total = accelerator.reduce(local, reduction="sum")
    return float(total[0] / total[1]) if total[1] > 0 else float("nan")


# ----------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    cfg: Config = recipe_config(Config, "Train the DashengTokenizer (GAN).", "recipes/configs/tokenizer",
                                argv)

    accelerator = build_accelerator(cfg.train.output_dir, cfg.train.mixed_precision)
    set_seed(cfg.train.seed)  # same initial weights on every process
    device = accelerator.device

    gan = build_gan(cfg, accelerator)
    min_samples = accelerator.unwrap_model(gan.generator).tokenizer.min_samples
    mel_distance = MultiScaleMelLoss().to(device)  # the validation metric, whatever trains
    image_mel = MelMagnitude(n_fft=1024, hop_length=160, n_mels=80).to(device)
    set_seed(cfg.train.seed, device_specific=True)  # per-process noise from here on

    # resume: weights, optimisers, schedules, RNG; the data position is the step
    start_step = resume_training(accelerator, cfg.train.output_dir, cfg.train.resume)

    train_source, val_records = split_data(cfg.data)
    val_set = AudioClipDataset(val_records, cfg.data.val_seconds, random_crop=False)
    loader = build_clip_loader(train_source, cfg.data.batch_size, cfg.data.crop_seconds,
                               cfg.train.seed, start_step, accelerator.process_index,
                               accelerator.num_processes, cfg.data.num_workers)
    metrics_log = MetricsLog(f"{cfg.train.output_dir}/{METRICS_NAME}", start_step,
                             accelerator.is_main_process)
    init_trackers(accelerator, "tokenizer", cfg)

    def run_validation(step: int) -> None:
        metrics = validate(accelerator, gan.generator, val_set, cfg, step, mel_distance, image_mel,
                           min_samples)
        accelerator.log(metrics, step=step)
        metrics_log.write(step, metrics)
        accelerator.print(f"step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))

    if start_step == 0:
        run_validation(0)

    progress = tqdm(total=cfg.train.max_steps, initial=start_step, desc="tokenizer",
                    disable=not accelerator.is_local_main_process)
    batches = iter(loader)
    for step in range(start_step + 1, cfg.train.max_steps + 1):
        batch = send_to_device(next(batches), device)
        logs = train_step(accelerator, gan, batch["audio"], batch["length"].clamp(min=min_samples),
                          cfg, adversarial=step > cfg.loss.disc_start_step)
        progress.update(1)

        if step % cfg.train.log_every == 0:  # the only place losses leave the device
            values = {k: float(v.detach()) for k, v in logs.items()}
            values["lr"] = gan.sched_g.get_last_lr()[0]
            accelerator.log(values, step=step)
            metrics_log.write(step, values)
            progress.set_postfix(mel=f"{values['mel']:.3f}", refresh=False)
        if step % cfg.train.val_every == 0 or step == cfg.train.max_steps:
            run_validation(step)
        if step % cfg.train.checkpoint_every == 0 or step == cfg.train.max_steps:
            save_checkpoint(accelerator, cfg.train.output_dir, step, cfg, cfg.train.keep_checkpoints)
    progress.close()

    # export the trained tokenizer (full weights gathered from every process, whatever sharding)
    state = accelerator.get_state_dict(gan.generator)
    if accelerator.is_main_process:
        final = DashengTokenizer.from_config(accelerator.unwrap_model(gan.generator).tokenizer.config)
        final.load_state_dict({k.removeprefix("tokenizer."): v for k, v in state.items()})
        final.save_pretrained(f"{cfg.train.output_dir}/final")
        accelerator.print(f"saved {cfg.train.output_dir}/final")
    accelerator.end_training()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except DashflowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
