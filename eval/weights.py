"""Official weight files of the embedding networks: where they live, how to check and load them.

Files are looked up in one folder: ``--weights-dir``, else ``$DASHFLOW_WEIGHTS``, else
``~/.cache/dashflow/weights``. Nothing is downloaded implicitly; ``dashflow download-weights``
fetches the files for machines that are online and checks their sha256.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dashflow.errors import DashflowError

if TYPE_CHECKING:
    import torch

WEIGHTS_ENV = "DASHFLOW_WEIGHTS"
DEFAULT_WEIGHTS_DIR = Path("~/.cache/dashflow/weights")


@dataclass(frozen=True)
class WeightFile:
    """One official file: a pinned ``sha256``, or a Hugging Face repo whose LFS metadata gives it."""

    key: str
    filename: str
    url: str
    sha256: str | None = None
    hub_repo: str | None = None

    def matches(self, digest: str) -> bool | None:
        """Whether ``digest`` is the pinned one; None when nothing is pinned."""
        return digest == self.sha256 if self.sha256 else None


OFFICIAL = {
    "vggish": WeightFile(
        "vggish", "vggish-10086976.pth",
        "https://github.com/harritaylor/torchvggish/releases/download/v0.1/vggish-10086976.pth",
        sha256="10086976245803799d9194e9a73d9b6c1549c71d1b80106f5cade5608a561f4b"),
    "cnn14": WeightFile(
        "cnn14", "Cnn14_16k_mAP=0.438.pth",
        "https://zenodo.org/record/3987831/files/Cnn14_16k_mAP%3D0.438.pth",
        sha256="e2ee543a27919542c2ea03eabaa70b24dcd4e6c8e05621de6b67a94e4c5058e6"),
    "clap": WeightFile(
        "clap", "630k-audioset-best.pt",
        "https://huggingface.co/lukewys/laion_clap/resolve/main/630k-audioset-best.pt",
        hub_repo="lukewys/laion_clap"),
}

# numpy objects that official checkpoints carry next to the tensors (the PANNs files hold the
# training sampler's state); both the numpy 1.x and 2.x import paths of the reconstructors.
_multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
_NUMPY_GLOBALS = [
    (_multiarray._reconstruct, "numpy.core.multiarray._reconstruct"),
    (_multiarray._reconstruct, "numpy._core.multiarray._reconstruct"),
    (_multiarray.scalar, "numpy.core.multiarray.scalar"),
    (_multiarray.scalar, "numpy._core.multiarray.scalar"),
    np.ndarray, np.dtype,
    # the dtype classes that numpy >= 1.25 instantiates when it rebuilds a pickled dtype
    *(type(np.dtype(code)) for code in "?bhilqBHILQefdgFDGSUV" if type(np.dtype(code)) is not np.dtype),
]


def weights_dir(path: str | os.PathLike | None = None) -> Path:
    """The weights folder: ``path``, else $DASHFLOW_WEIGHTS, else ~/.cache/dashflow/weights."""
    chosen = path or os.environ.get(WEIGHTS_ENV) or DEFAULT_WEIGHTS_DIR
    return Path(chosen).expanduser()


def locate(key: str, folder: str | os.PathLike | None = None) -> Path:
    """Path of official file ``key`` in the weights folder; one-line error when it is missing."""
    spec = OFFICIAL[key]
    path = weights_dir(folder) / spec.filename
    if not path.is_file():
        raise DashflowError(
            f"missing weight file {path}: get it from {spec.url} "
            f"(or run `dashflow download-weights {key} --weights-dir {path.parent}`)")
    return path


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_folder(folder: str | os.PathLike) -> str:
    """sha256 over the (relative name, sha256) of every file in ``folder`` (e.g. a HF model)."""
    folder = Path(folder)
    lines = [f"{p.relative_to(folder).as_posix()} {sha256_file(p)}\n"
             for p in sorted(folder.rglob("*")) if p.is_file()]
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a ``.pth``/``.pt`` checkpoint, read with ``torch.load(weights_only=True)``.

    Unwraps ``{"model": ...}`` (PANNs) and ``{"state_dict": ...}`` (LAION-CLAP) and strips a
    ``module.`` prefix left by DataParallel. Numpy arrays stored beside the weights are allowed
    through a scoped allow-list; nothing else is unpickled.
    """
    import torch

    try:
        with _allow_numpy():
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DashflowError(f"{path}: cannot load weights ({str(exc).strip().splitlines()[0]})") from None
    for wrapper in ("model", "state_dict"):
        if isinstance(checkpoint, dict) and isinstance(checkpoint.get(wrapper), dict):
            checkpoint = checkpoint[wrapper]
    if not isinstance(checkpoint, dict) or not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise DashflowError(f"{path}: not a state dict of tensors")
    if checkpoint and all(k.startswith("module.") for k in checkpoint):
        checkpoint = {k[len("module."):]: v for k, v in checkpoint.items()}
    return checkpoint


def _allow_numpy():
    """Scoped allow-list (torch >= 2.5); torch 2.4 only has the process-wide one."""
    import torch

    if hasattr(torch.serialization, "safe_globals"):
        return torch.serialization.safe_globals(_NUMPY_GLOBALS)
    torch.serialization.add_safe_globals(_NUMPY_GLOBALS)
    return contextlib.nullcontext()


def download(key: str, folder: str | os.PathLike | None = None, progress: bool = True) -> Path:
    """Fetch official file ``key`` into the weights folder and verify its sha256 before keeping it."""
    from dashflow.outputs import atomic_path

    spec = OFFICIAL[key]
    target = weights_dir(folder) / spec.filename
    expected = spec.sha256 or _hub_sha256(spec)
    if target.is_file() and sha256_file(target) == expected:
        return target
    with atomic_path(target) as tmp:
        _fetch(spec.url, tmp, spec.filename, progress)
        digest = sha256_file(tmp)
        if digest != expected:
            raise DashflowError(f"{spec.url}: sha256 {digest} does not match {expected}; file discarded")
    return target


def _hub_sha256(spec: WeightFile) -> str:
    """The LFS sha256 that the Hugging Face hub publishes for a file (its ETag)."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    if not spec.hub_repo:
        raise DashflowError(f"{spec.filename}: no sha256 to check a download against")
    try:
        meta = get_hf_file_metadata(hf_hub_url(spec.hub_repo, spec.filename))
    except Exception as exc:
        raise DashflowError(f"cannot reach the hub for {spec.filename}: {str(exc).splitlines()[0]}") from None
    return (meta.etag or "").strip('"').removeprefix("W/").strip('"')


def _fetch(url: str, dest: Path, desc: str, progress: bool) -> None:
    from tqdm import tqdm

    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(dest, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=desc, disable=not progress) as bar:
                for block in iter(lambda: response.read(1 << 20), b""):
                    out.write(block)
                    bar.update(len(block))
    except OSError as exc:
        raise DashflowError(f"cannot download {url}: {exc}") from None
