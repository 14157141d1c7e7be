"""One weight I/O for every package: strict safetensors save / load and one weights hash.

Folders hold ``config.json`` + ``model.safetensors`` (the official Hugging Face file names), or
shards listed in ``model.safetensors.index.json``. Every failure is one DashflowError line.

The weights hash identifies weights as stored: 16 hex digits of sha256 over every tensor's
name, dtype, shape and bytes, in name order. :func:`save_weights` records it in the file's
metadata, so loading never hashes; a file without it (an official download) is hashed once
per machine and remembered by file identity (path, size, mtime) in the user cache.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from dashflow.errors import DashflowError, first_line
from dashflow.outputs import atomic_path

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
HASH_KEY = "weights_hash"
HASH_CACHE = Path("~/.cache/dashflow/weights_hashes.json")


# --- the hash ---------------------------------------------------------------------------------------

def weights_hash(tensors: Iterable[tuple[str, torch.Tensor]]) -> str:
    """16-hex sha256 over (name, dtype, shape, bytes) of ``tensors``, taken in name order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(tensors, key=lambda item: item[0]):
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}|{flat.dtype}|{tuple(tensor.shape)};".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def module_hash(module: torch.nn.Module) -> str:
    """The weights hash of ``module``: the one its files record (see :func:`attach_weights_source`;
    files without one are hashed once), else, for weights never saved or loaded, computed over its
    state dict as held. Weights changed in place after loading or saving keep the files' hash."""
    recorded = getattr(module, "_dashflow_weights_hash", None)
    if recorded is None:
        files = getattr(module, "_dashflow_weights_files", None)
        if not files:
            return weights_hash(module.state_dict().items())
        recorded = module._dashflow_weights_hash = files_hash(files)
    return recorded


def attach_weights_source(module: torch.nn.Module, files: list[Path], recorded: str | None) -> None:
    """Remember where ``module``'s weights came from: :func:`module_hash` then returns
    ``recorded`` (the hash stored in the files), or hashes ``files`` once (cached)."""
    module._dashflow_weights_hash = recorded
    module._dashflow_weights_files = files


def files_hash(files: list[Path]) -> str:
    """The weights hash of the tensors stored in ``files``, cached by file identity."""
    identity = "|".join(f"{path.resolve()}:{path.stat().st_size}:{path.stat().st_mtime_ns}" for path in files)
    cache_file = HASH_CACHE.expanduser()
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    if identity in cache:
        return cache[identity]

    def stored() -> Iterable[tuple[str, torch.Tensor]]:
        for path in files:
            with safe_open(str(path), framework="pt") as handle:
                for key in handle.keys():  # noqa: SIM118 - safe_open is not a mapping
                    yield key, handle.get_tensor(key)

    digest = weights_hash(list(stored()))
    alive = {key: value for key, value in cache.items()  # forget files that are gone
             if all(Path(part.rsplit(":", 2)[0]).exists() for part in key.split("|"))}
    try:
        with atomic_path(cache_file) as tmp:
            tmp.write_text(json.dumps({**alive, identity: digest}, indent=0) + "\n")
    except OSError:
        pass  # a read-only home: hash again next time
    return digest


# --- save / load ------------------------------------------------------------------------------------

def save_weights(state: Mapping[str, torch.Tensor], folder: str | os.PathLike) -> str:
    """Write ``state`` as ``folder/model.safetensors`` (atomically), its weights hash recorded in
    the metadata. Returns the hash."""
    tensors = {key: value.detach().cpu().contiguous() for key, value in state.items()}
    digest = weights_hash(tensors.items())
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / WEIGHTS_NAME) as tmp:
        # one metadata entry: safetensors writes several in no fixed order, so files would differ
        save_file(tensors, str(tmp), metadata={HASH_KEY: digest})
    return digest


def weight_files(folder: str | os.PathLike) -> list[Path]:
    """``model.safetensors``, or the shards its index lists; DashflowError when there are none."""
    folder = Path(folder)
    if (folder / WEIGHTS_NAME).is_file():
        return [folder / WEIGHTS_NAME]
    index = folder / WEIGHTS_INDEX_NAME
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise DashflowError(f"{index}: unreadable shard index ({first_line(exc)})") from None
        return [folder / shard for shard in shards]
    raise DashflowError(f"{folder}: no {WEIGHTS_NAME} (or {WEIGHTS_INDEX_NAME})")


def load_weights(folder: str | os.PathLike, device: str | torch.device = "cpu",
                 ) -> tuple[dict[str, torch.Tensor], list[Path], str | None]:
    """(state dict, the files it came from, the weights hash they record or None)."""
    files = weight_files(folder)
    state: dict[str, torch.Tensor] = {}
    recorded: list[str | None] = []
    try:
        for path in files:
            state.update(load_file(str(path), device=str(device)))
            with safe_open(str(path), framework="pt") as handle:
                recorded.append((handle.metadata() or {}).get(HASH_KEY))
    except (SafetensorError, OSError, ValueError) as exc:
        raise DashflowError(f"{folder}: unreadable weights ({first_line(exc)})") from None
    return state, files, recorded[0] if len(files) == 1 else None


def check_state(module: torch.nn.Module, state: dict[str, torch.Tensor], source: str | os.PathLike,
                optional_buffers: bool = False) -> None:
    """Raise one DashflowError line unless ``state`` fits ``module`` exactly: no missing,
    unexpected or mis-shaped keys. Empty tensors (and, with ``optional_buffers``, buffers that
    load hooks recompute) may be absent; the empty ones are filled into ``state``."""
    expected = module.state_dict()
    buffers = {name for name, _ in module.named_buffers()} if optional_buffers else set()
    for key, tensor in expected.items():
        if tensor.numel() == 0 and key not in state:
            state[key] = torch.empty(tensor.shape, dtype=tensor.dtype)
    missing = [k for k in expected if k not in state and k not in buffers]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {list(state[k].shape)} vs {list(v.shape)}" for k, v in expected.items()
              if k in state and state[k].shape != v.shape]
    problems = [f"{len(found)} {what} (first: {found[0]})" for what, found in
                (("missing keys", missing), ("unexpected keys", unexpected),
                 ("shape mismatches (file vs model)", shapes)) if found]
    if problems:
        raise DashflowError(f"{source}: weights do not fit {type(module).__name__}: {'; '.join(problems)}")


def load_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], source: str | os.PathLike,
                optional_buffers: bool = False, assign: bool = False) -> None:
    """:func:`check_state`, then ``module.load_state_dict(state)`` (``assign`` keeps the tensors)."""
    check_state(module, state, source, optional_buffers)
    module.load_state_dict(state, strict=not optional_buffers, assign=assign)
