"""Checkpoint folders: a local folder, or a Hugging Face repo id fetched into the hub cache."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from dashflow.errors import DashflowError, first_line


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
        if text.count("/") != 1 or text.startswith((".", "/", "~")):
            raise DashflowError(f"{name}: {what} folder not found")
        prefix = f"{subfolder}/" if subfolder else ""
        try:
            from huggingface_hub import snapshot_download
            path = Path(snapshot_download(repo_id=text, allow_patterns=[prefix + p for p in patterns], **hub_kwargs))
        except Exception as exc:  # noqa: BLE001 - offline, unknown repo, auth: one line for the user
            raise DashflowError(f"{name}: not a local folder and not downloadable from the Hugging Face "
                                f"Hub ({first_line(exc)})") from None
    return path / subfolder if subfolder else path
