"""The pipelines as diffusers users expect: the generic loader opens saved and bundled folders,
the scheduler component is the one that steps, the content adapter runs once per call."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from dashflow.generation.cli.enhance import DEMO_ENHANCER
from dashflow.generation.cli.generate import DEMO_PIPELINE
from dashflow.generation.pipelines import SpeechEnhancementPipeline, TextToAudioPipeline, TextToMusicPipeline
from diffusers import DiffusionPipeline

from tests.generation.pipelines.test_pipelines import build_tiny_pipeline

SEED, STEPS = 3, 2


def generate(pipe, prompt: str = "a dog barks") -> np.ndarray:
    return pipe(prompt, duration=0.4, num_inference_steps=STEPS, seed=SEED).audios


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    pipe = build_tiny_pipeline()
    folder = tmp_path_factory.mktemp("native") / "pipeline"
    pipe.save_pretrained(folder)
    return pipe, folder


def test_diffusion_pipeline_from_pretrained_opens_saved_and_bundled_folders(saved):
    pipe, folder = saved
    generic = DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)
    assert type(generic) is TextToAudioPipeline
    generic.set_progress_bar_config(disable=True)
    np.testing.assert_array_equal(generate(generic), generate(pipe))
    for bundled, cls in ((DEMO_PIPELINE / "tta", TextToAudioPipeline), (DEMO_PIPELINE / "ttm", TextToMusicPipeline),
                         (DEMO_PIPELINE / "se", SpeechEnhancementPipeline), (DEMO_ENHANCER, SpeechEnhancementPipeline)):
        assert type(DiffusionPipeline.from_pretrained(bundled, trust_remote_code=True)) is cls
        # one pipeline.py for every kind: diffusers caches the first it imports for the process
        assert (bundled / "pipeline.py").read_text() == (folder / "pipeline.py").read_text()


def test_own_loader_never_runs_the_folder_code(saved, tmp_path):
    _, folder = saved
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    (copy / "pipeline.py").write_text("raise SystemExit('pipeline.py ran')\n")
    assert type(TextToAudioPipeline.from_pretrained(copy)) is TextToAudioPipeline


def test_swapping_the_scheduler_in_the_folder_changes_the_sampling(saved, tmp_path):
    pipe, folder = saved
    reference = generate(pipe)
    shifted = tmp_path / "shifted"
    shutil.copytree(folder, shifted)
    config_file = shifted / "scheduler" / "scheduler_config.json"
    config_file.write_text(json.dumps(json.loads(config_file.read_text()) | {"shift": 3.0}))
    loaded = TextToAudioPipeline.from_pretrained(shifted)
    loaded.set_progress_bar_config(disable=True)
    assert loaded.scheduler.config.shift == 3.0
    assert not np.allclose(generate(loaded), reference)

    heun = tmp_path / "heun"
    shutil.copytree(folder, heun)
    index = json.loads((heun / "model_index.json").read_text())
    index["scheduler"] = ["diffusers", "FlowMatchHeunDiscreteScheduler"]
    (heun / "model_index.json").write_text(json.dumps(index))
    loaded = TextToAudioPipeline.from_pretrained(heun)
    loaded.set_progress_bar_config(disable=True)
    assert type(loaded.scheduler).__name__ == "FlowMatchHeunDiscreteScheduler"
    calls = []
    loaded.transformer.backbone.register_forward_hook(lambda *_: calls.append(1))
    audio = generate(loaded)
    assert np.isfinite(audio).all() and not np.allclose(audio, reference)
    assert len(calls) > STEPS + 1  # Heun evaluates the model twice per step


def test_the_content_adapter_runs_once_per_call(saved):
    pipe, _ = saved
    calls = []
    handle = pipe.transformer.content_adapter.register_forward_hook(lambda *_: calls.append(1))
    try:
        pipe("a dog barks", num_inference_steps=STEPS, seed=SEED)  # predicted duration
        pipe("a dog barks", duration=0.4, num_inference_steps=STEPS, seed=SEED)
    finally:
        handle.remove()
    assert len(calls) == 2


def test_bundled_pipeline_gives_the_recorded_audio():
    """The bundled demo's first samples for one seed, recorded when the demo was last trained (see
    the test's data file): a change that alters the bundled audio must re-record it on purpose."""
    pipe = TextToAudioPipeline.from_pretrained(DEMO_PIPELINE)
    pipe.set_progress_bar_config(disable=True)
    out = pipe("a dog barking", duration=1.0, num_inference_steps=25, seed=0)
    recorded = json.loads((Path(__file__).parent / "data" / "demo_dog_seed0.json").read_text())
    np.testing.assert_allclose(out.audios[0, :len(recorded["head"])], recorded["head"], rtol=0, atol=1e-4)  # other CPUs round differently
    assert abs(float(np.abs(out.audios[0]).sum()) - recorded["abs_sum"]) < 1e-3 * recorded["abs_sum"]


@pytest.mark.parametrize("bundled, recording", [(DEMO_ENHANCER, "demo_enhancer.json"),
                                                (DEMO_PIPELINE, "demo_unified_se.json")])
def test_bundled_enhancers_give_the_recorded_audio(bundled, recording):
    """The bundled enhancer (Model A) and the bundled demo model's se task on a fixed noisy signal,
    each recorded when it was last trained."""
    recorded = json.loads((Path(__file__).parent / "data" / recording).read_text())
    pipe = SpeechEnhancementPipeline.from_pretrained(bundled)
    generator = torch.Generator().manual_seed(0)
    t = torch.arange(32000) / 16000
    noisy = 0.3 * torch.sin(2 * math.pi * 220 * t) * torch.sin(2 * math.pi * 3 * t)
    out = pipe((noisy + 0.05 * torch.randn(32000, generator=generator))[None], seed=0)[0]
    np.testing.assert_allclose(out[:len(recorded["head"])].numpy(), recorded["head"], rtol=0, atol=1e-4)
    assert abs(float(out.abs().sum()) - recorded["abs_sum"]) < 1e-3 * recorded["abs_sum"]


@pytest.mark.slow
def test_compiled_pipeline_matches_eager_and_keeps_its_weights(tmp_path, monkeypatch):
    """``pipe.compile()`` (torch.compile of the DiT, inductor on the CPU): same audio, same keys.
    Inductor writes C++; on a machine without a C++ compiler the DiT is compiled with the
    ``aot_eager`` backend instead (the same graph capture, no code generation)."""
    if not (shutil.which("g++") or shutil.which("clang++")):
        compile_module = torch.nn.Module.compile
        monkeypatch.setattr(torch.nn.Module, "compile", lambda module, mode=None, **kwargs: compile_module(
            module, backend="aot_eager", **kwargs))
    pipe = build_tiny_pipeline()
    eager = generate(pipe)
    keys = sorted(pipe.transformer.state_dict())
    pipe.compile()
    np.testing.assert_allclose(generate(pipe), eager, rtol=0, atol=1e-4)
    assert sorted(pipe.transformer.state_dict()) == keys
    pipe.save_pretrained(tmp_path / "saved")  # a compiled pipeline still saves loadable weights
    np.testing.assert_allclose(generate(TextToAudioPipeline.from_pretrained(tmp_path / "saved")), eager, rtol=0, atol=1e-5)


def test_dtype_casts_and_loading_are_quiet(saved, capfd):
    """No "modules that should be kept in float32: []" note on ``.to(dtype)`` (diffusers' own cast
    logs it), no transformers weight-loading bars on load; the quieting ends with the call."""
    import logging

    import diffusers
    from transformers.utils import logging as hf_logging

    _, folder = saved
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    library = logging.getLogger("diffusers")
    library.addHandler(handler)
    diffusers.utils.logging.set_verbosity_warning()  # as a fresh process has it
    hf_logging.enable_progress_bar()  # as a fresh process has it (an earlier CLI test may have turned it off)
    try:
        capfd.readouterr()
        pipe = TextToAudioPipeline.from_pretrained(folder)
        assert "Loading weights" not in capfd.readouterr().err
        pipe.to(torch.bfloat16)
        assert pipe.transformer.dtype == torch.bfloat16 and not any("kept in float32" in r for r in records)
        DiffusionPipeline.to(pipe, torch.float32)  # the control: diffusers' cast does log it
        assert any("kept in float32: []" in r for r in records)
    finally:
        library.removeHandler(handler)
    assert hf_logging.is_progress_bar_enabled()  # restored after loading
    from dashflow.text_encoders import load_text_encoder

    load_text_encoder("minilm")  # the control: loading outside a pipeline shows transformers' bar
    assert "Loading weights" in capfd.readouterr().err


def test_saved_index_holds_no_machine_path(saved, tmp_path):
    _, folder = saved
    loaded = TextToAudioPipeline.from_pretrained(folder)
    loaded.save_pretrained(tmp_path / "again")
    assert "_name_or_path" not in json.loads((tmp_path / "again" / "model_index.json").read_text())
    for bundled in (DEMO_PIPELINE / "tta", DEMO_PIPELINE / "ttm", DEMO_PIPELINE / "se", DEMO_ENHANCER):
        assert "_name_or_path" not in json.loads((bundled / "model_index.json").read_text())
