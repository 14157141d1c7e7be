"""Typed configs: dataclass schema + YAML file + dotted command-line overrides (OmegaConf)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence, TypeVar

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from dashflow.audio import atomic_path
from dashflow.errors import DashflowError

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
        merged = OmegaConf.merge(merged, OmegaConf.from_dotlist(list(overrides)))
    except OmegaConfBaseException as exc:
        raise DashflowError(f"bad config: {str(exc).splitlines()[0]}") from None
    return merged  # type: ignore[return-value]


def save_config(config, path: str | os.PathLike) -> None:
    """Write the resolved ``config`` as YAML, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(OmegaConf.to_yaml(config, resolve=True))
