"""Shared training plumbing: accelerator defaults, LR schedule, atomic checkpoints, logs."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import pytest
import torch
from accelerate.state import AcceleratorState
from dashflow.spectral import register_recomputable_buffer

from dashflow.config import load_config
from dashflow.errors import DashflowError
from dashflow.training import (
    RunLog,
    CONFIG_NAME,
    STATE_NAME,
    CosineWithWarmup,
    MetricsLog,
    build_accelerator,
    checkpoint_path,
    cosine_schedule,
    find_checkpoint,
    init_trackers,
    list_checkpoints,
    load_checkpoint,
    log_audio,
    log_spectrogram,
    read_metrics,
    resume_training,
    save_checkpoint,
)


@dataclass
class Toy:
    lr: float = 0.1
    name: str = "toy"


@pytest.fixture()
def fresh_state():
    """Accelerate keeps process-wide state; give every test its own."""
    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def make(tmp_path, total_steps: int = 10, lr: float = 0.1, **kwargs):
    accelerator = build_accelerator(tmp_path, **kwargs)
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    # a recomputable buffer, as the tokenizer's STFT window (a view of n + 1 values when made)
    register_recomputable_buffer(model, "window", lambda: torch.hann_window(8))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    scheduler = cosine_schedule(optimizer, total_steps=total_steps, warmup_steps=2)
    return (accelerator, *accelerator.prepare(model, optimizer, scheduler))


def train_steps(model, optimizer, scheduler, steps: int) -> list[float]:
    losses = []
    for _ in range(steps):
        loss = model(torch.randn(3, 4)).square().mean()  # uses the global RNG on purpose
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
    return losses


def test_cosine_schedule_warms_up_then_decays_to_ten_percent():
    factor = CosineWithWarmup(total_steps=110, warmup_steps=10, final_ratio=0.1)
    assert factor(0) == pytest.approx(0.1) and factor(9) == pytest.approx(1.0)
    assert factor(10) == pytest.approx(1.0)
    assert factor(60) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert factor(110) == pytest.approx(0.1) and factor(500) == pytest.approx(0.1)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=5e-4)
    scheduler = cosine_schedule(optimizer, total_steps=4)
    lrs = []
    for _ in range(5):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == pytest.approx(5e-4) and lrs[-1] == pytest.approx(5e-5)
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_accelerator_defaults_on_cpu(tmp_path, fresh_state):
    torch.set_flush_denormal(False)
    accelerator = build_accelerator(tmp_path)
    assert accelerator.mixed_precision == "no" and accelerator.device.type == "cpu"
    assert accelerator.logging_dir == str(tmp_path / "logs")
    assert (torch.tensor([1e-39]) * 1.0).item() == 0.0  # denormals flushed (slow on CPUs)


def test_checkpoints_resume_weights_optimizer_schedule_and_rng(tmp_path, fresh_state):
    config = load_config(Toy, overrides=["lr=0.5"])
    accelerator, model, optimizer, scheduler = make(tmp_path)
    train_steps(model, optimizer, scheduler, 3)
    saved = save_checkpoint(accelerator, tmp_path, 3, config)
    expected = train_steps(model, optimizer, scheduler, 4)
    final_weight = model.weight.detach().clone()

    assert saved == checkpoint_path(tmp_path, 3) and saved.name == "step_0000003"
    assert json.loads((saved / STATE_NAME).read_text()) == {"step": 3}
    assert "lr: 0.5" in (saved / CONFIG_NAME).read_text()
    assert (saved / "model.safetensors").is_file()
    assert not list(tmp_path.glob(".step_*"))

    AcceleratorState._reset_state(reset_partial_state=True)
    accelerator, model, optimizer, scheduler = make(tmp_path)
    torch.manual_seed(123)  # whatever happened to the RNG, the checkpoint restores it
    assert load_checkpoint(accelerator, find_checkpoint(tmp_path, "latest")) == 3
    assert train_steps(model, optimizer, scheduler, 4) == expected
    assert torch.equal(model.weight.detach(), final_weight)


def test_resuming_with_a_new_max_steps_or_lr_follows_the_new_schedule(tmp_path, fresh_state, caplog):
    accelerator, model, optimizer, scheduler = make(tmp_path)
    train_steps(model, optimizer, scheduler, 4)
    save_checkpoint(accelerator, tmp_path, 4)

    AcceleratorState._reset_state(reset_partial_state=True)
    accelerator, model, optimizer, scheduler = make(tmp_path, total_steps=40, lr=0.2)
    load_checkpoint(accelerator, checkpoint_path(tmp_path, 4))
    expected = 0.2 * CosineWithWarmup(40, 2)(4)
    assert scheduler.get_last_lr() == [expected] and optimizer.param_groups[0]["lr"] == expected
    assert "not the checkpoint's: base_lrs [0.1] -> [0.2]; lr_lambdas" in caplog.text
    assert "[{'total_steps': 10, 'warmup_steps': 2, 'final_ratio': 0.1}] -> [{'total_steps': 40," in caplog.text
    scheduler.step()
    assert scheduler.get_last_lr() == [0.2 * CosineWithWarmup(40, 2)(5)]


def test_keep_last_and_incomplete_folders(tmp_path, fresh_state):
    accelerator, *_ = make(tmp_path)
    for step in (1, 2, 3, 4):
        save_checkpoint(accelerator, tmp_path, step, keep_last=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_0000003", "step_0000004"]
    (tmp_path / "step_0000009").mkdir()  # a folder without trainer state is not a checkpoint
    (tmp_path / ".step_0000010.tmp").mkdir()
    assert find_checkpoint(tmp_path, "latest") == checkpoint_path(tmp_path, 4)
    assert find_checkpoint(tmp_path, "") is None
    assert find_checkpoint(tmp_path / "empty", "latest") is None
    with pytest.raises(DashflowError, match="step_0000009: not a checkpoint folder"):
        find_checkpoint(tmp_path, str(tmp_path / "step_0000009"))
    save_checkpoint(accelerator, tmp_path, 10, keep_last=0)
    assert len(list_checkpoints(tmp_path)) == 3 and not (tmp_path / ".step_0000010.tmp").exists()


def test_metrics_log_drops_steps_after_the_resume_point(tmp_path):
    log = MetricsLog(tmp_path / "m.jsonl")
    for step in range(1, 6):
        log.write(step, {"loss": step / 10})
    MetricsLog(tmp_path / "m.jsonl", start_step=3).write(4, {"loss": 9.0})
    assert read_metrics(tmp_path / "m.jsonl") == [
        {"step": 1, "loss": 0.1}, {"step": 2, "loss": 0.2}, {"step": 3, "loss": 0.3},
        {"step": 4, "loss": 9.0}]
    MetricsLog(tmp_path / "off.jsonl", enabled=False).write(1, {"loss": 1.0})
    assert not (tmp_path / "off.jsonl").exists()


def test_tensorboard_scalars_audio_and_images(tmp_path, fresh_state):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accelerator = build_accelerator(tmp_path)
    init_trackers(accelerator, "run", load_config(Toy))
    accelerator.log({"loss": 1.5}, step=1)
    log_audio(accelerator, "val/audio", torch.sin(torch.arange(1600) / 5.0), 1)
    log_spectrogram(accelerator, "val/mel", torch.randn(20, 30), 1)
    accelerator.end_training()
    events = EventAccumulator(str(next((tmp_path / "logs").rglob("events.*")).parent),
                              size_guidance={"images": 0, "audio": 0}).Reload()
    tags = events.Tags()
    assert "loss" in tags["scalars"] and "val/audio" in tags["audio"] and "val/mel" in tags["images"]
    image = events.Images("val/mel")[0]
    assert (image.height, image.width) == (20, 30)


def test_averaged_losses_are_window_means_of_the_steps_that_gave_them(tmp_path, fresh_state):
    accelerator = build_accelerator(tmp_path)
    log = RunLog(accelerator, "run", load_config(Toy), str(tmp_path), max_steps=6, log_every=3, start_step=0)
    drawn = ["a", "b", "a", "a", "a", "a"]  # window 1: a at steps 1 and 3, b at 2; window 2: a only
    for step, task in enumerate(drawn, start=1):
        loss = torch.tensor(float(step))
        log.step(step, {"loss": loss}, averaged={f"loss_{task}": loss})
    log.close()
    accelerator.end_training()
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert rows == [{"step": 3, "loss": 3.0, "loss_a": 2.0, "loss_b": 2.0},
                    {"step": 6, "loss": 6.0, "loss_a": 5.0}]


def test_processes_that_did_not_form_a_group_are_refused(tmp_path, monkeypatch):
    """accelerate launch --multi_gpu on a CPU-only machine without ACCELERATE_USE_CPU: each rank
    would silently train alone."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(DashflowError, match="2 processes were launched but they did not form a process group"):
        build_accelerator(tmp_path)


def _damage(folder, how: str) -> None:
    """Damage checkpoint ``folder`` the ways a disk, a kill or an attacker would."""
    if how == "truncated weights":
        weights = folder / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif how == "missing optimizer":
        (folder / "optimizer.bin").unlink()
    elif how == "pickle payload":  # a pickle that would run code if unpickled
        import pickle

        class Payload:
            def __reduce__(self):
                return (exec, ("open('PWNED', 'w').write('x')",))

        (folder / "optimizer.bin").write_bytes(pickle.dumps({"state": Payload()}))


@pytest.mark.parametrize("how", ["truncated weights", "missing optimizer", "pickle payload"])
def test_a_damaged_newest_checkpoint_falls_back_and_a_named_one_is_one_line(tmp_path, fresh_state, capfd,
                                                                           monkeypatch, how):
    monkeypatch.chdir(tmp_path)
    accelerator, model, optimizer, scheduler = make(tmp_path)
    train_steps(model, optimizer, scheduler, 2)
    save_checkpoint(accelerator, tmp_path, 2, keep_last=0)
    expected = train_steps(model, optimizer, scheduler, 3)
    save_checkpoint(accelerator, tmp_path, 5, keep_last=0)
    _damage(checkpoint_path(tmp_path, 5), how)
    (tmp_path / ".step_0000006.tmp").mkdir()  # a save killed midway

    AcceleratorState._reset_state(reset_partial_state=True)
    accelerator, model, optimizer, scheduler = make(tmp_path)
    assert resume_training(accelerator, tmp_path, "latest") == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: skipping") and "step_0000005" in err[0], err
    assert train_steps(model, optimizer, scheduler, 3) == expected  # continues exactly from step 2
    assert not (tmp_path / ".step_0000006.tmp").exists() and not (tmp_path / "PWNED").exists()

    with pytest.raises(DashflowError, match="step_0000005: damaged checkpoint") as info:
        resume_training(accelerator, tmp_path, str(checkpoint_path(tmp_path, 5)))
    assert "\n" not in str(info.value)


def test_no_readable_checkpoint_is_an_error_not_a_silent_fresh_start(tmp_path, fresh_state):
    accelerator, *_ = make(tmp_path)
    save_checkpoint(accelerator, tmp_path, 1)
    _damage(checkpoint_path(tmp_path, 1), "missing optimizer")
    with pytest.raises(DashflowError, match="none of its 1 checkpoints can be read"):
        resume_training(accelerator, tmp_path, "latest")
    assert resume_training(accelerator, tmp_path, "") == 0


def test_a_metrics_line_torn_by_a_kill_is_dropped(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n{"step": 3, "lo')
    assert [r["step"] for r in read_metrics(path)] == [1, 2]
    MetricsLog(path, start_step=2).write(3, {"loss": 1.0})
    assert [r["step"] for r in read_metrics(path)] == [1, 2, 3]


def test_an_unusable_output_dir_fails_before_training(tmp_path, fresh_state):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(DashflowError, match="train.output_dir .*afile is a file, not a folder"):
        build_accelerator(tmp_path / "afile" / "run")
    with pytest.raises(DashflowError, match="exists and is not a folder"):
        build_accelerator(tmp_path / "afile")
