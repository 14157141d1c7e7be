"""Checkpoint folders: a local folder, or a Hugging Face repo id fetched into the hub cache."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlparse

from dashflow.errors import DashflowError, first_line

PROBE_SECONDS = 3.0


def hub_reachable(timeout: float = PROBE_SECONDS) -> bool:
    """Whether the Hub's host (``HF_ENDPOINT``, default huggingface.co) accepts a TCP connection
    within ``timeout`` seconds, name lookup included; False at once when ``HF_HUB_OFFLINE`` is set."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    result: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((host, 443), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)  # getaddrinfo itself has no timeout
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def resolve_folder(name: str | os.PathLike, what: str, patterns: Sequence[str] = ("*.json", "*.safetensors"),
                   subfolder: str | None = None, **hub_kwargs) -> Path:
    """``name`` (+ ``subfolder``) as a local folder; an ``owner/name`` repo id is downloaded with
    ``huggingface_hub.snapshot_download`` (only files matching ``patterns``: never pickles).
    ``what`` names the folder in the one-line DashflowError."""
    path = Path(name).expanduser()
    if not path.is_dir():
        if path.exists():
            raise DashflowError(f"{name}: is a file; a {what} is a folder")
        text = str(name)
        if text.count("/") != 1 or text.startswith((".", "/", "~")) or Path(text.split("/")[0]).is_dir():
            raise DashflowError(f"{name}: {what} folder not found")
        if not hub_reachable():
            raise DashflowError(f"{name}: no such local folder, and the Hugging Face Hub is unreachable "
                                f"(offline?) to fetch it as a repo id")
        prefix = f"{subfolder}/" if subfolder else ""
        try:
            from huggingface_hub import snapshot_download
            path = Path(snapshot_download(repo_id=text, allow_patterns=[prefix + p for p in patterns], **hub_kwargs))
        except Exception as exc:  # noqa: BLE001 - offline, unknown repo, auth: one line for the user
            raise DashflowError(f"{name}: not a local folder and not downloadable from the Hugging Face "
                                f"Hub ({first_line(exc)})") from None
    return path / subfolder if subfolder else path


def bundled_model(name: str) -> Path:
    """The folder of a demo model shipped in the package (``pipeline``, ``enhancer``), found
    without importing ``dashflow.generation``."""
    import importlib.util

    spec = importlib.util.find_spec("dashflow.generation")
    return Path(next(iter(spec.submodule_search_locations))) / "demo" / name
