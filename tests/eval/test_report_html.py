"""Render report.html in headless Chromium (Debian `chromium`) and check the screenshot."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install -y chromium)")
def test_report_renders_in_headless_chromium(generation_run, tmp_path):
    from PIL import Image

    shot = tmp_path / "report.png"
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
                    f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,2400",
                    f"--screenshot={shot}", (generation_run["out"] / "report.html").as_uri()],
                   check=True, capture_output=True, timeout=120)
    image = np.asarray(Image.open(shot).convert("RGB"))
    assert image.shape == (2400, 1200, 3)
    # not a blank page: text, tables and inlined figures give many colours and a dark/light spread
    colours = np.unique(image.reshape(-1, 3), axis=0)
    assert len(colours) > 2000
    assert image.min() < 40 and image.max() > 240
    # the spectrograms (magma colour map) are drawn: strongly orange/purple pixels exist
    magma = (image[..., 0] > 180) & (image[..., 2] < 120) | (image[..., 2] > 100) & (image[..., 1] < 40)
    assert magma.mean() > 0.01
