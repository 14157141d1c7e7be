"""`dashflow download-weights`: sha256-checked downloads (exercised with file:// URLs, no network)."""

from __future__ import annotations

import hashlib

import pytest
from dashflow.eval import weights
from dashflow.eval.weights import OFFICIAL, WeightFile, download, weights_dir

from dashflow.errors import DashflowError
from tests.eval.conftest import run_cli


def _serve(tmp_path, payload: bytes):
    source = tmp_path / "server" / "file.bin"
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_bytes(payload)
    return source.as_uri(), hashlib.sha256(payload).hexdigest()


def test_download_checks_full_sha256(tmp_path, monkeypatch):
    url, digest = _serve(tmp_path, b"cnn14 weights")
    monkeypatch.setitem(OFFICIAL, "cnn14", WeightFile("cnn14", "Cnn14_16k_mAP=0.438.pth", url, sha256=digest))
    target = download("cnn14", tmp_path / "w", progress=False)
    assert target == tmp_path / "w" / "Cnn14_16k_mAP=0.438.pth" and target.read_bytes() == b"cnn14 weights"
    monkeypatch.setitem(OFFICIAL, "cnn14", WeightFile("cnn14", "other.pth", url, sha256="0" * 64))
    with pytest.raises(DashflowError, match="does not match"):
        download("cnn14", tmp_path / "w", progress=False)
    assert not (tmp_path / "w" / "other.pth").exists()
    assert [p.name for p in (tmp_path / "w").iterdir()] == ["Cnn14_16k_mAP=0.438.pth"]  # no partial files


def test_download_checks_the_hub_etag_when_nothing_is_pinned(tmp_path, monkeypatch):
    url, digest = _serve(tmp_path, b"clap weights")
    spec = WeightFile("clap", "630k-audioset-best.pt", url, hub_repo="lukewys/laion_clap")
    monkeypatch.setitem(OFFICIAL, "clap", spec)
    monkeypatch.setattr(weights, "_hub_sha256", lambda spec: digest)
    assert download("clap", tmp_path / "w", progress=False).read_bytes() == b"clap weights"
    monkeypatch.setattr(weights, "_hub_sha256", lambda spec: "f" * 64)
    (tmp_path / "w" / "630k-audioset-best.pt").unlink()
    with pytest.raises(DashflowError, match="does not match"):
        download("clap", tmp_path / "w", progress=False)


def test_unreachable_url_and_cli(tmp_path, monkeypatch, capsys):
    absent = (tmp_path / "absent").as_uri()
    monkeypatch.setitem(OFFICIAL, "cnn14", WeightFile("cnn14", "x.pth", absent, sha256="0" * 64))
    with pytest.raises(DashflowError, match="cannot download"):
        download("cnn14", tmp_path / "w", progress=False)
    url, digest = _serve(tmp_path, b"abc")
    monkeypatch.setitem(OFFICIAL, "vggish", WeightFile("vggish", "v.pth", url, sha256=digest))
    assert run_cli(["download-weights", "vggish", "--weights-dir", tmp_path / "w"]) == 0
    assert (tmp_path / "w" / "v.pth").read_bytes() == b"abc"
    assert "vggish:" in capsys.readouterr().out


def test_weights_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("DASHFLOW_WEIGHTS", str(tmp_path / "env"))
    assert weights_dir() == tmp_path / "env"
    assert weights_dir(tmp_path / "flag") == tmp_path / "flag"
    monkeypatch.delenv("DASHFLOW_WEIGHTS")
    assert str(weights_dir()).endswith(".cache/dashflow/weights")


def test_official_pins():
    # sha256 of the published files (the VGGish name carries its first 8 hex digits, torch.hub style)
    assert OFFICIAL["vggish"].sha256.startswith("10086976")
    assert OFFICIAL["cnn14"].sha256 == "e2ee543a27919542c2ea03eabaa70b24dcd4e6c8e05621de6b67a94e4c5058e6"
    assert OFFICIAL["clap"].sha256 is None and OFFICIAL["clap"].hub_repo == "lukewys/laion_clap"
    assert OFFICIAL["cnn14"].matches("0" * 64) is False and OFFICIAL["clap"].matches("0" * 64) is None
