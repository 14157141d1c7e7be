"""dashflow.config: dataclass defaults < YAML < dotted overrides; bad keys fail in one line."""

from dataclasses import dataclass, field

import pytest
from omegaconf import MISSING, OmegaConf

from dashflow.config import load_config, recipe_config, save_config
from dashflow.errors import DashflowError


@dataclass
class Optim:
    lr: float = 5e-4
    betas: tuple[float, float] = (0.8, 0.9)


@dataclass
class Schema:
    name: str = "tiny"
    steps: int = 10
    optim: Optim = field(default_factory=Optim)


def test_precedence_and_roundtrip(tmp_path):
    yaml = tmp_path / "c.yaml"
    yaml.write_text("steps: 20\noptim:\n  lr: 0.001\n")
    cfg = load_config(Schema, yaml, ["optim.lr=0.002", "name=paper"])
    assert (cfg.name, cfg.steps, cfg.optim.lr, tuple(cfg.optim.betas)) == ("paper", 20, 0.002, (0.8, 0.9))
    save_config(cfg, tmp_path / "resolved.yaml")
    again = load_config(Schema, tmp_path / "resolved.yaml")
    assert OmegaConf.to_container(again) == OmegaConf.to_container(cfg)


@pytest.mark.parametrize("overrides", [["optim.momentum=0.9"], ["steps=many"]])
def test_unknown_key_or_bad_type_is_one_line(overrides):
    with pytest.raises(DashflowError) as info:
        load_config(Schema, None, overrides)
    assert "\n" not in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(DashflowError, match="not found"):
        load_config(Schema, tmp_path / "absent.yaml")


@dataclass
class Required:
    name: str = MISSING
    steps: int = 10
    optim: Optim = field(default_factory=Optim)


def test_recipe_command_line_needs_every_required_value(tmp_path):
    yaml = tmp_path / "c.yaml"
    yaml.write_text("optim:\n  lr: 0.001\n")
    with pytest.raises(DashflowError, match=r"leaves name unset; pass them as name=\.\.\. after the config"):
        recipe_config(Required, "train", "configs", ["--config", str(yaml)])
    cfg = recipe_config(Required, "train", "configs", ["--config", str(yaml), "name=x", "steps=3"])
    assert (cfg.name, cfg.steps, cfg.optim.lr) == ("x", 3, 0.001)


def test_resolve_device_rejects_bad_names_in_one_line():
    import torch

    from dashflow.device import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(None).type in ("cpu", "cuda")
    with pytest.raises(DashflowError, match="not a torch device"):
        resolve_device("potato")
    if not torch.cuda.is_available():
        with pytest.raises(DashflowError, match="CUDA is not available"):
            resolve_device("cuda")
