"""The whole `dashflow eval` command on random-weight networks over folders made here."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import soundfile as sf
from dashflow.eval.weights import sha256_file

from tests.conftest import SENTENCES, noise, tts, write_wav
from tests.eval.conftest import run_cli


def test_generation_metrics_end_to_end(generation_run, tiny_weights):
    assert generation_run["code"] == 2  # the report is written; two unreadable files make it exit 2
    out, report = generation_run["out"], generation_run["report"]
    assert {p.name for p in out.iterdir()} >= {"report.json", "report.md", "report.html"}
    run, run2 = report["runs"]
    metrics = run["metrics"]
    for key in ("fad", "fd", "kl_softmax", "kl_sigmoid", "is", "clap"):
        assert np.isfinite(metrics[key]["value"]), key
    assert metrics["fad"]["n_generated"] == 13 and metrics["fad"]["n_reference"] == 13
    assert metrics["fad"]["n_vectors_generated"] == 26  # two 0.96 s frames per 2 s clip, pooled
    assert metrics["kl_softmax"]["n_pairs"] == 12 and metrics["is"]["n_generated"] == 13
    assert metrics["clap"]["n_clips"] == 12
    per_clip = run["per_clip"]
    assert -1.0 <= per_clip["clip00"]["clap"] <= 1.0 and per_clip["clip00"]["caption"] == "a dog barks"
    assert np.mean([per_clip[f"clip{i:02d}"]["kl_softmax"] for i in range(12)]) == pytest.approx(
        metrics["kl_softmax"]["value"])


def test_bad_and_unpaired_files_are_reported_by_name(generation_run):
    run = generation_run["report"]["runs"][0]
    issues = run["issues"]
    assert set(issues["unreadable"]) == {"bad_empty", "bad_junk"}
    assert "bad_junk.wav" in issues["unreadable"]["bad_junk"]
    assert "bad_empty" not in run["per_clip"] or "clap" not in run["per_clip"]["bad_empty"]
    assert issues["unpaired_generated"] == ["bad_empty", "bad_junk", "extra"]
    assert issues["unpaired_reference"] == ["ref_only"]
    assert issues["uncaptioned"] == ["extra"]
    md = (generation_run["out"] / "report.md").read_text()
    assert "unreadable bad_junk" in md and "ref_only" in md


def test_report_records_every_setting(generation_run, tiny_weights, tiny_clap):
    report = generation_run["report"]
    models = report["models"]
    assert models["vggish"]["sha256"] == sha256_file(tiny_weights / "vggish-10086976.pth")
    assert models["cnn14"]["sha256"] == sha256_file(tiny_weights / "Cnn14_16k_mAP=0.438.pth")
    assert models["vggish"]["official_file"] is False and models["vggish"]["official_architecture"] is False
    assert models["vggish"]["sample_rate"] == 16000 and models["clap"]["sample_rate"] == 48000
    assert models["clap"]["backend"] == "transformers" and "random 10 s crop" in models["clap"]["long_clips"]
    assert report["settings"]["is"]["splits"] == 10 and report["settings"]["is"]["seed"] == 2020
    assert report["settings"]["kl"]["direction"] == "KL(reference || generated)"
    run, run2 = report["runs"]
    assert run["settings"]["steps"] == 25 and run["settings"]["cfg"] == 5.0
    assert run["settings"]["seed"] == {"per_clip": list(range(12))}
    assert (run["settings"]["train_step"], run2["settings"]["train_step"]) == (3000, 6000)
    assert report["reference"]["n_files"] == 13 and len(report["reference"]["set_sha256"]) == 64
    assert report["reference"]["audio"] == {"seconds_min": 2.0, "seconds_mean": 2.0, "seconds_max": 2.0,
                                            "sample_rates": [16000]}
    assert run["audio"]["seconds_mean"] == 2.0  # the two unreadable files have no length
    assert {"torch", "numpy", "scipy"} <= set(report["environment"])
    md = (generation_run["out"] / "report.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| run"))
    assert "FAD ↓" in header and "CLAPScore ↑" in header and "steps" in header and "length (s)" in header
    assert "| generated | 2.0 | 25 | 5.0 | per clip: 0-11 (12 values) | runs/tta/checkpoint-3000 | 3000 |" in md


def test_html_is_self_contained_with_figures(generation_run):
    text = (generation_run["out"] / "report.html").read_text()
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", text)
    assert "<script" not in text and "<link" not in text
    images = re.findall(r'src="data:image/png;base64,', text)
    assert len(images) >= 5  # curves, CLAP and KL histograms, two spectrogram grids
    assert "metrics across runs" in text and "Best and worst clips" in text and "generated_6000" in text


def test_cache_makes_reruns_identical(generation_run, tmp_path):
    argv = list(generation_run["argv"])
    argv[argv.index("--out") + 1] = tmp_path / "again"
    assert run_cli(argv) == 2  # its two unreadable files, again
    again = json.loads((tmp_path / "again" / "report.json").read_text())
    for key, entry in generation_run["report"]["runs"][0]["metrics"].items():
        assert again["runs"][0]["metrics"][key]["value"] == pytest.approx(entry["value"], rel=1e-12), key
    assert any((generation_run["root"] / "cache").rglob("*.npz"))


def test_errors_are_one_line(tmp_path, capsys, generation_run):
    gen = generation_run["root"] / "generated"
    ref = generation_run["root"] / "reference"
    assert run_cli(["eval", "--generated", gen, "--reference", ref, "--metrics", "fad",
                    "--weights-dir", tmp_path, "--no-cache"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "vggish-10086976.pth" in err and "github.com/harritaylor/torchvggish" in err
    assert run_cli(["eval", "--generated", gen, "--metrics", "fd", "--weights-dir", tmp_path]) == 2
    assert "--reference is needed for fd" in capsys.readouterr().err
    assert run_cli(["eval", "--generated", gen, "--metrics", "fad,psnr"]) == 2
    assert "unknown metric 'psnr'" in capsys.readouterr().err
    assert run_cli(["eval", "--generated", gen, "--metrics", "dnsmos", "--steps", "50", "--no-cache"]) == 2
    assert "--steps 50 contradicts the sidecars" in capsys.readouterr().err
    assert run_cli(["download-weights", "yamnet"]) == 2
    assert "unknown weight file 'yamnet'" in capsys.readouterr().err


def test_reconstruction_and_enhancement_sets(tmp_path):
    ref, gen = tmp_path / "clean", tmp_path / "enhanced"
    for i, text in enumerate(SENTENCES[:3]):
        if tts(text, ref / f"utt{i}.wav") is None:
            pytest.skip("needs flite or espeak-ng for real speech")
        wav, sr = sf.read(ref / f"utt{i}.wav", dtype="float32")
        noisy = wav + noise(len(wav) / sr, sr=sr, amp=0.01 * (i + 1), seed=i)[: len(wav)]
        write_wav(gen / f"utt{i}.wav", np.clip(noisy, -1, 1), sr)
    write_wav(ref / "silent.wav", np.zeros(16000, np.float32))
    write_wav(gen / "silent.wav", np.zeros(16000, np.float32))
    out = tmp_path / "report"
    assert run_cli(["eval", "--generated", gen, "--reference", ref, "--metrics", "reconstruction,enhancement",
                    "--out", out, "--no-cache", "--mel-preset", "dac-base", "--align", "uniflow"]) == 0
    report = json.loads((out / "report.json").read_text())
    run = report["runs"][0]
    m = run["metrics"]
    for key in ("mel", "stft", "pesq", "stoi", "sisdr", "dnsmos_ovrl", "dnsmos_sig", "dnsmos_bak", "dnsmos_p808"):
        assert m[key]["value"] is not None and np.isfinite(m[key]["value"]), key
    assert m["pesq"]["n_clips"] == 3 and m["pesq"]["n_failed"] == 1
    assert all("silent" in run["issues"]["failed"][k] for k in ("pesq", "stoi", "sisdr"))
    pesq = [run["per_clip"][f"utt{i}"]["pesq"] for i in range(3)]
    assert pesq[0] > pesq[2]  # more noise, lower PESQ
    assert report["settings"]["mel"]["preset"] == "dac-base" and report["settings"]["speech"]["alignment"] == "uniflow"
    assert m["mel"]["n_clips"] == 4  # the silent pair still has a (zero) mel distance
    html = (out / "report.html").read_text()
    assert "PESQ-WB" in html and "data:image/png;base64," in html


def test_clap_uses_sidecar_prompts_without_reference(tmp_path, tiny_clap):
    from tests.eval.conftest import clip

    gen = tmp_path / "gen"
    for i, prompt in enumerate(["a dog barks", "birds sing"]):
        write_wav(gen / f"g{i}.wav", clip(i, seconds=12.0, seed=i))  # longer than 10 s: cropped
        (gen / f"g{i}.json").write_text(json.dumps({"prompt": prompt, "seed": 7}))
    write_wav(gen / "g2.wav", clip(2, seed=2))  # no sidecar, no caption
    out = tmp_path / "report"
    assert run_cli(["eval", "--generated", gen, "--metrics", "clap", "--clap-model", tiny_clap, "--out", out,
                    "--no-cache", "--clap-crop", "start", "--cfg", "3.5"]) == 0
    run = json.loads((out / "report.json").read_text())["runs"][0]
    assert run["metrics"]["clap"]["n_clips"] == 2 and run["issues"]["uncaptioned"] == ["g2"]
    assert run["per_clip"]["g1"]["caption"] == "birds sing"
    assert run["settings"] == {"seed": 7, "cfg": 3.5}
