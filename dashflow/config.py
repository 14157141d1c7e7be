"""Typed configs: dataclass schema + YAML file + dotted command-line overrides (OmegaConf)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from dashflow.errors import DashflowError
from dashflow.outputs import atomic_path

T = TypeVar("T")


def load_config(schema: type[T], path: str | os.PathLike | None = None,
                overrides: Sequence[str] = ()) -> T:
    """Merge ``schema`` defaults, the YAML at ``path`` and ``key.sub=value`` overrides.

    Returns an OmegaConf structured config that behaves like an instance of ``schema``;
    unknown keys and wrong types raise DashflowError.
    """
    try:
        merged = OmegaConf.structured(schema)
        if path is not None:
            if not Path(path).is_file():
                raise DashflowError(f"{path}: config file not found")
            merged = OmegaConf.merge(merged, OmegaConf.load(path))
        for override in overrides:  # one at a time: a key may index a list (tasks.0.train=...)
            key, _, value = override.partition("=")
            OmegaConf.update(merged, key, OmegaConf.from_dotlist([f"value={value}"])["value"], merge=True)
    except OmegaConfBaseException as exc:
        raise DashflowError(f"bad config: {str(exc).splitlines()[0]}") from None
    return merged  # type: ignore[return-value]


def save_config(config, path: str | os.PathLike) -> None:
    """Write the resolved ``config`` as YAML, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(OmegaConf.to_yaml(config, resolve=True))


def recipe_config(schema: type[T], description: str, config_folder: str,
                  argv: Sequence[str] | None = None) -> T:
    """A recipe's command line ``--config YAML [dotted.key=value ...]`` -> the loaded config
    (every ``???`` value filled, else one DashflowError line)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", required=True, help=f"YAML config ({config_folder})")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.max_steps=10")
    args = parser.parse_args(argv)
    cfg = load_config(schema, args.config, args.overrides)
    unset = sorted(OmegaConf.missing_keys(cfg))
    if unset:
        raise DashflowError(f"{args.config} leaves {', '.join(unset)} unset; pass them as "
                            f"{unset[0]}=... after the config")
    return cfg
