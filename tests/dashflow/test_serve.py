"""`dashflow serve` on the bundled demo models, in a child process: the HTTP API (generate,
enhance, reconstruct), bad requests, concurrency and memory, a client that disconnects, and the
page in headless Chromium (Debian's chromium + chromedriver)."""

from __future__ import annotations

import base64
import io
import json
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import noise, tone

import requests

from benchmarks.serve import browser, generate_in_page, spawn_server

LIMITS = ("--max-seconds", "10", "--max-upload-mb", "1", "--max-queued", "12", "--max-steps", "400")
FAST = {"steps": 4, "cfg": 3.0}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve")
    process, url = spawn_server(folder, *LIMITS)
    yield {"url": url, "process": process, "out": folder / "served"}
    process.terminate()
    process.wait(30)


def wav_b64(wav: np.ndarray, sr: int = 16000, subtype: str = "PCM_16") -> str:
    buffer = io.BytesIO()
    sf.write(buffer, wav, sr, format="WAV", subtype=subtype)
    return base64.b64encode(buffer.getvalue()).decode()


def post(server, route: str, body, **kwargs):
    return requests.post(f"{server['url']}/api/{route}", json=body, timeout=300, **kwargs)


def read_wav(response) -> tuple[np.ndarray, int]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "audio/wav"
    wav, sr = sf.read(io.BytesIO(response.content), dtype="float32")
    return wav, sr


def test_generate_answers_with_the_wav_and_its_settings(server):
    response = post(server, "generate", {"prompt": "a dog barking", "duration": 2.0, "seed": 3, **FAST})
    wav, sr = read_wav(response)
    settings = json.loads(response.headers["x-dashflow-settings"])
    assert sr == 16000 and wav.shape == (32000,) and np.abs(wav).max() > 0.01
    assert settings["prompt"] == "a dog barking" and settings["seed"] == 3 and settings["steps"] == 4
    assert settings["task"] == "tta" and settings["model_weights_hash"]
    # the sidecar on disk is the header's, beside the WAV, inside the server's folder
    saved = server["out"] / settings["output"]
    assert saved.is_file() and json.loads(saved.with_suffix(".json").read_text()) == settings
    again = post(server, "generate", {"prompt": "a dog barking", "duration": 2.0, "seed": 3, **FAST})
    np.testing.assert_array_equal(read_wav(again)[0], wav)  # a seed gives the same clip


def test_text_to_music_and_the_steering_controls(server):
    music = post(server, "generate", {"prompt": "solo piano", "task": "ttm", "duration": 2.0, "seed": 0, **FAST})
    assert json.loads(music.headers["x-dashflow-settings"])["task"] == "ttm"
    assert read_wav(music)[0].shape == (32000,)
    negative = post(server, "generate", {"prompt": "rain", "negative_prompt": "thunder", "duration": 2.0, "seed": 0,
                                         **FAST})
    assert json.loads(negative.headers["x-dashflow-settings"])["negative_prompt"] == "thunder"
    clip = wav_b64(tone(440, 2.0) + noise(2.0, amp=0.02))
    init = post(server, "generate", {"prompt": "a dog barking", "audio": clip, "audio_mode": "init", "strength": 0.5,
                                     "seed": 0, **FAST})
    assert read_wav(init)[0].shape == (32000,)  # audio-to-audio keeps the clip's length
    assert json.loads(init.headers["x-dashflow-settings"])["steering"]["mode"] == "audio_to_audio"
    inpaint = post(server, "generate", {"prompt": "a dog barking", "audio": clip, "audio_mode": "inpaint",
                                        "regions": [[0.5, 1.2]], "seed": 0, **FAST})
    out = read_wav(inpaint)[0]
    source = tone(440, 2.0) + noise(2.0, amp=0.02)
    assert out.shape == (32000,) and np.abs(out[26000:] - source[26000:]).max() < 1e-3  # kept outside the region
    assert not list((server["out"] / "uploads").iterdir()), "uploads are removed once their request is done"


def test_enhance_and_reconstruct_over_http(server):
    speech_like = (0.2 * np.sin(2 * np.pi * 150 * np.arange(48000) / 16000) * (1 + np.sin(np.arange(48000) / 900))
                   ).astype(np.float32) + noise(3.0, amp=0.05)
    enhanced = post(server, "enhance", {"audio": wav_b64(speech_like)})
    wav, sr = read_wav(enhanced)
    assert sr == 16000 and wav.shape == (48000,)
    settings = json.loads(enhanced.headers["x-dashflow-settings"])
    assert settings["enhancer"] and settings["input_sha256"]
    rebuilt = post(server, "reconstruct", {"audio": wav_b64(tone(330, 1.5, sr=22050), sr=22050)})
    wav, sr = read_wav(rebuilt)
    assert sr == 16000 and wav.shape == (24000,)  # resampled to the codec's rate, same duration
    assert json.loads(rebuilt.headers["x-dashflow-settings"])["codec_hash"]


def bad_requests():
    clip = wav_b64(tone(440, 2.0))
    long_clip = wav_b64(tone(440, 12.0, amp=0.2))
    garbage = base64.b64encode(b"not audio at all" * 10).decode()
    nan_clip = wav_b64(np.full(16000, np.nan, dtype=np.float32), subtype="FLOAT")
    ok = {"prompt": "a dog barking", **FAST}
    return [
        ("generate", {"prompt": ""}, 400, "empty"),
        ("generate", {"prompt": "   "}, 400, "empty"),
        ("generate", {"prompt": "dog " * 200}, 400, "limit is 500"),
        ("generate", {"duration": 2.0}, 422, "prompt"),
        ("generate", {**ok, "volume": 11}, 422, "volume"),
        ("generate", {**ok, "task": "karaoke"}, 422, "task"),
        ("generate", {**ok, "duration": -1}, 422, "duration"),
        ("generate", {**ok, "duration": 600}, 400, "10 s limit"),
        ("generate", {**ok, "steps": 0}, 422, "steps"),
        ("generate", {**ok, "steps": 500}, 400, "limit of 400"),
        ("generate", {**ok, "cfg": 0.5}, 422, "cfg"),
        ("generate", {**ok, "seed": -4}, 422, "seed"),
        ("generate", {**ok, "cfg": 1.0, "negative_prompt": "rain"}, 400, "negative_prompt needs cfg > 1"),
        ("generate", {**ok, "audio": "%%% not base64", "audio_mode": "init"}, 400, "not base64"),
        ("generate", {**ok, "audio": garbage, "audio_mode": "init"}, 400, "cannot read audio"),
        ("generate", {**ok, "audio": clip}, 400, "audio and audio_mode go together"),
        ("generate", {**ok, "audio_mode": "init"}, 400, "audio and audio_mode go together"),
        ("generate", {**ok, "audio": clip, "audio_mode": "inpaint"}, 400, "regions"),
        ("generate", {**ok, "audio": clip, "audio_mode": "inpaint", "regions": [[1.5, 9.0]]}, 400, "region"),
        ("generate", {**ok, "audio": clip, "audio_mode": "continue", "strength": 0.5}, 400, "strength"),
        ("generate", {**ok, "audio": clip, "audio_mode": "continue"}, 400, "duration"),
        ("generate", {**ok, "audio": long_clip, "audio_mode": "init"}, 400, "limit"),
        ("generate", {**ok, "audio": wav_b64(np.zeros(16000, np.float32)), "audio_mode": "init"}, 400, "silent"),
        ("enhance", {}, 422, "audio"),
        ("enhance", {"audio": ""}, 400, "empty"),
        ("enhance", {"audio": nan_clip}, 400, "NaN"),
        ("enhance", {"audio": clip, "mode": "magic"}, 422, "mode"),
        ("reconstruct", {"audio": garbage}, 400, "cannot read audio"),
        ("reconstruct", {"audio": "A" * (2 * 2 ** 20)}, 413, "1 MB upload limit"),
        ("reconstruct", [1, 2, 3], 422, "body"),
    ]


def test_bad_requests_get_one_clear_4xx_line_and_the_server_keeps_serving(server):
    cases = bad_requests()
    assert len(cases) >= 20
    for route, body, status, fragment in cases:
        response = post(server, route, body)
        assert response.status_code == status, (route, body if len(str(body)) < 200 else "...", response.text)
        message = response.json()["error"]
        assert fragment.lower() in message.lower() and "\n" not in message and "Traceback" not in message, message
        assert requests.get(f"{server['url']}/api/health", timeout=10).status_code == 200
    assert requests.post(f"{server['url']}/api/generate", data="{not json", timeout=10,
                         headers={"content-type": "application/json"}).status_code == 422
    assert requests.get(f"{server['url']}/api/generate", timeout=10).status_code in (404, 405)
    assert server["process"].poll() is None
    assert read_wav(post(server, "generate", {"prompt": "a dog barking", "duration": 1.0, **FAST}))[0].size == 16000


def peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM")).split()[1]) / 1024


def test_eight_concurrent_requests_all_complete_with_bounded_memory(server):
    body = {"prompt": "a dog barking", "duration": 3.0, **FAST}
    read_wav(post(server, "generate", {**body, "seed": 99}))
    before = peak_rss_mb(server["process"].pid)
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda seed: post(server, "generate", {**body, "seed": seed}), range(8)))
    seeds = [json.loads(r.headers["x-dashflow-settings"])["seed"] for r in responses]
    assert [read_wav(r)[0].shape for r in responses] == [(48000,)] * 8 and seeds == list(range(8))
    grown = peak_rss_mb(server["process"].pid) - before
    assert grown < 300, f"peak memory grew by {grown:.0f} MB over 8 queued requests (they run one at a time)"


def test_a_client_that_disconnects_frees_its_slot(server):
    slow = {"prompt": "a dog barking", "duration": 10.0, "steps": 400, "seed": 1}  # about 30 s on 2 cores
    before = {p.name for p in server["out"].glob("*.wav")}
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.post(f"{server['url']}/api/generate", json=slow, timeout=1.5)
    tic = time.monotonic()
    response = post(server, "generate", {"prompt": "a dog barking", "duration": 1.0, "seed": 2, **FAST})
    waited = time.monotonic() - tic
    read_wav(response)
    written = {p.name for p in server["out"].glob("*.wav")} - before
    assert len(written) == 1, f"the abandoned request still wrote its clip ({sorted(written)}; waited {waited:.1f} s)"


def test_the_server_binds_to_this_machine_unless_told():
    from dashflow.cli import build_parser

    args = build_parser().parse_args(["serve"])
    assert args.host == "127.0.0.1"


def test_the_page_is_served(server):
    """Stand-in for the browser test where chromium is absent: the page's HTML and its component
    config (the prompt box, the Generate button and the result player) are served."""
    page = requests.get(server["url"] + "/", timeout=30)
    assert page.status_code == 200 and "<html" in page.text.lower()
    config = requests.get(server["url"] + "/config", timeout=30).json()
    ids = {c.get("props", {}).get("elem_id") for c in config["components"]}
    assert {"prompt", "generate", "result-audio"} <= ids


BROWSER = shutil.which("chromium") and shutil.which("chromedriver")


@pytest.mark.skipif(not BROWSER, reason="needs Debian's chromium and chromedriver (apt-get install -y chromium "
                                        "chromium-driver); test_the_page_is_served covers the page without them")
def test_the_page_generates_a_playable_wav_in_headless_chromium(server, tmp_path):
    from PIL import Image

    driver = browser()
    try:
        result = generate_in_page(driver, server["url"], "a dog barking")
        driver.save_screenshot(str(tmp_path / "page.png"))
    finally:
        driver.quit()
    assert "error" not in result, result
    assert result["head"] == "RIFF" and result["seconds"] > 0.5, result  # the browser decoded a WAV
    image = np.asarray(Image.open(tmp_path / "page.png").convert("RGB"))
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 500  # a rendered page with a spectrogram, not blank


def test_served_text_pipelines_carry_the_given_adapters(tmp_path):
    """``--lora``: both text tasks sample through the adapter and their sidecars record it."""
    import torch
    from dashflow.generation.pipelines.audio import load_pipeline
    from dashflow.generation.pipelines.lora import LoraSettings, add_lora, save_lora

    from dashflow.hub import bundled_model

    model = load_pipeline(bundled_model("pipeline")).transformer
    add_lora(model, LoraSettings(rank=2, alpha=2), "test")
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.05)
    adapter = save_lora(model, tmp_path / "adapter.safetensors", LoraSettings(rank=2, alpha=2), "test")
    process, url = spawn_server(tmp_path, "--lora", f"{adapter}:0.5")
    try:
        for task in ("tta", "ttm"):
            response = requests.post(f"{url}/api/generate", json={"prompt": "a dog barking", "task": task,
                                                                  "duration": 1.0, **FAST}, timeout=300)
            assert response.status_code == 200, response.text
            [record] = json.loads(response.headers["x-dashflow-settings"])["lora"]
            assert record["weight"] == 0.5 and record["file"] == str(adapter.resolve())
    finally:
        process.terminate()
        process.wait(30)
