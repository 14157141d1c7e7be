"""``--device`` and ``--dtype`` handling shared by every command."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dashflow.errors import DashflowError

if TYPE_CHECKING:
    import torch


def resolve_device(name: str | None) -> torch.device:
    """``name`` as a torch.device; None or "auto" picks cuda when available, else cpu."""
    import torch  # here, so that building the CLI parsers does not import torch

    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DashflowError(f"--device {name!r}: not a torch device (try cpu or cuda)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DashflowError(f"--device {name}: CUDA is not available on this machine")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise DashflowError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise DashflowError(f"--device {name}: Apple MPS is not available on this machine")
    if device.type not in ("cpu", "cuda", "mps"):
        raise DashflowError(f"--device {name}: not supported here (use cpu, cuda or mps)")
    return device


DTYPES = ("auto", "float32", "bfloat16", "float16")


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``--dtype`` (one of DTYPES) as a torch dtype; "auto" is bfloat16 on cuda, float32 elsewhere."""
    import torch

    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if name not in DTYPES:
        raise DashflowError(f"--dtype {name!r}: choose from {', '.join(DTYPES)}")
    return getattr(torch, name)
