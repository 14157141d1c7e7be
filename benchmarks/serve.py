"""`dashflow serve` against the pipeline alone, and cold starts.

    python -m benchmarks.serve [--out benchmarks/results/serve] [--repeats 5]

1. Warm: in one process, the bundled demo pipeline called directly for a 5 s clip (25 steps,
   CFG 5, seed 0) against the same request through the server's HTTP API (``POST /api/generate``
   to a server running in a thread of this process, on the same models), alternating: medians of
   ``--repeats`` rounds after one warm-up each, and their ratio.
2. Cold: a server process from launch until ``/api/health`` answers, then its first 5 s request;
   beside it the whole ``generate "a dog barking" --duration 5`` command line.
3. The page in headless Chromium (Debian's ``chromium`` + ``chromedriver``, through selenium): a
   prompt entered, Generate clicked, the WAV the player got decoded by the browser; a screenshot.

Writes ``serve.json`` and ``page.png`` in ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

REQUEST = {"prompt": "a dog barking", "duration": 5.0, "steps": 25, "cfg": 5.0, "seed": 0}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, process: subprocess.Popen | None = None, timeout: float = 180.0) -> dict:
    """Poll ``url/api/health`` until it answers; RuntimeError if ``process`` exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server exited with status {process.returncode}")
        try:
            return requests.get(f"{url}/api/health", timeout=2).json()
        except requests.ConnectionError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


def spawn_server(out_dir: Path, *flags: str, port: int | None = None) -> tuple[subprocess.Popen, str]:
    """``dashflow serve`` in a child process on a free port (its log in ``out_dir/server.log``);
    returns the process and its base URL once healthy."""
    port = port or free_port()
    out_dir.mkdir(parents=True, exist_ok=True)
    log = open(out_dir / "server.log", "wb")
    process = subprocess.Popen([sys.executable, "-m", "dashflow.cli", "serve", "--port", str(port),
                                "--out-dir", str(out_dir / "served"), *flags], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process)
    except RuntimeError:
        process.kill()
        raise RuntimeError(f"dashflow serve did not start: {(out_dir / 'server.log').read_text()[-2000:]}") from None
    return process, url


def browser(window: str = "1280,1700"):
    """Headless Debian chromium through its chromedriver (no browser download)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser")
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--autoplay-policy=no-user-gesture-required", f"--window-size={window}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)


DECODE_PLAYER_AUDIO = """
const done = arguments[arguments.length - 1];
const link = document.querySelector('#result-audio a[download]');
fetch(link.href).then(r => r.arrayBuffer()).then(bytes => {
  const head = String.fromCharCode(...new Uint8Array(bytes.slice(0, 4)));
  return new OfflineAudioContext(1, 16000, 16000).decodeAudioData(bytes).then(
    audio => done({head: head, seconds: audio.duration, rate: audio.sampleRate, href: link.href}));
}).catch(err => done({error: String(err)}));
"""


def generate_in_page(driver, url: str, prompt: str, timeout: float = 180.0) -> dict:
    """Open the page, generate ``prompt``; the result player's WAV as the browser decodes it
    ({head, seconds, rate, href}) and the seconds it took."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    box = WebDriverWait(driver, 60).until(lambda d: d.find_element(By.CSS_SELECTOR, "#prompt textarea"))
    box.send_keys(prompt)
    start = time.perf_counter()
    driver.find_element(By.CSS_SELECTOR, "#generate").click()
    WebDriverWait(driver, timeout).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "#result-audio a[download]"))
    driver.set_script_timeout(60)
    decoded = driver.execute_async_script(DECODE_PLAYER_AUDIO)
    return {**decoded, "seconds_to_result": time.perf_counter() - start}


def interleaved_medians(calls: dict, repeats: int) -> dict[str, float]:
    """Median seconds of each call over ``repeats`` rounds, the calls alternating within a round
    (so a machine whose speed drifts slows them alike), after one warm-up each."""
    for call in calls.values():
        call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            tic = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - tic)
    return {name: statistics.median(values) for name, values in times.items()}


def warm(repeats: int, work: Path) -> dict:
    import uvicorn

    from dashflow.commands.serve import Limits, prepare_out_dir
    from dashflow.commands.serve_app import build_app
    from dashflow.commands.serve_models import Models
    from dashflow.generation.cli.enhance import DEMO_ENHANCER
    from dashflow.generation.cli.generate import DEMO_PIPELINE

    models = Models(DEMO_PIPELINE, DEMO_ENHANCER, prepare_out_dir(work / "warm"), Limits())
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(build_app(models), host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url)
    pipe = models.pipelines["tta"]

    def over_http():
        response = requests.post(f"{url}/api/generate", json=REQUEST, timeout=300)
        response.raise_for_status()

    medians = interleaved_medians({"pipeline_call_s": lambda: pipe(
        REQUEST["prompt"], REQUEST["duration"], num_inference_steps=25, guidance_scale=5.0, seed=0),
        "http_request_s": over_http}, repeats)
    server.should_exit = True
    models.close()
    return {**medians, "ratio": medians["http_request_s"] / medians["pipeline_call_s"], "repeats": repeats}


def cold(work: Path) -> dict:
    tic = time.perf_counter()
    process, url = spawn_server(work / "cold")
    start_s = time.perf_counter() - tic
    tic = time.perf_counter()
    requests.post(f"{url}/api/generate", json=REQUEST, timeout=300).raise_for_status()
    first_s = time.perf_counter() - tic
    process.terminate()
    process.wait(30)
    tic = time.perf_counter()
    subprocess.run(["generate", "a dog barking", "--duration", "5", "--seed", "0", "--quiet", "-o",
                    str(work / "cli.wav")], check=True, capture_output=True)
    return {"server_start_s": start_s, "server_first_request_s": first_s,
            "cli_generate_s": time.perf_counter() - tic}


def page(work: Path, out: Path) -> dict:
    process, url = spawn_server(work / "page")
    driver = browser()
    try:
        result = generate_in_page(driver, url, "a dog barking")
        driver.save_screenshot(str(out / "page.png"))
    finally:
        driver.quit()
        process.terminate()
        process.wait(30)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/serve"))
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        result = {"warm": warm(args.repeats, work), "cold": cold(work), "page": page(work, args.out),
                  "clip_seconds": REQUEST["duration"], "cpu_threads": os.cpu_count(),
                  "date": time.strftime("%Y-%m-%d %H:%M")}
    (args.out / "serve.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
