"""TextToAudioPipeline / TextToMusicPipeline on a tiny random pipeline (tiny tokenizer, tiny DiT,
the bundled MiniLM): saving and loading, lengths, seeds, guidance, dtypes, prompts, validation."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from dashflow.generation.model.audiogen import AudioGenModel
from dashflow.generation.pipelines.audio import (
    AudioGenerationOutput,
    TextToAudioPipeline,
    TextToMusicPipeline,
    format_prompt,
    load_pipeline,
)
from dashflow.generation.pipelines.components import PipelineTextEncoder
from dashflow.generation.sampling.flow import LatentNormalizer
from dashflow.generation.sampling.cfm import FlowMatching
from dashflow.text_encoders import load_text_encoder
from dashflow.tokenizer.model import DashengTokenizer
from diffusers import FlowMatchEulerDiscreteScheduler
from transformers import BertConfig, BertModel, BertTokenizerFast

from dashflow.errors import DashflowError

MINILM_DIM = 384
STEPS = 2  # 3 model calls: enough to exercise the loop, cheap on 2 cores


def tiny_model(tokenizer: DashengTokenizer, text_dim: int = MINILM_DIM, seed: int = 0, **overrides) -> AudioGenModel:
    """The tiny DiT preset on the tiny tokenizer's latents, every weight randomised (the zero-initialised
    cross-attention and adaLN would otherwise make the output ignore the text)."""
    model = AudioGenModel.from_preset("tiny", latent_dim=tokenizer.latent_dim, text_embed_dim=text_dim, **overrides)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.05 * torch.randn(param.shape, generator=generator))
    return model


def build_tiny_pipeline(cls=TextToAudioPipeline, text_encoder=None, **kwargs):
    torch.manual_seed(0)
    tokenizer = DashengTokenizer.from_preset("tiny")
    text_encoder = text_encoder or load_text_encoder("minilm")
    pipe = cls(tokenizer=tokenizer, text_encoder=text_encoder, transformer=tiny_model(tokenizer, text_encoder.dim),
               scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000), **kwargs)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def pipe() -> TextToAudioPipeline:
    return build_tiny_pipeline()


@pytest.fixture(scope="module")
def saved(pipe, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tta") / "pipeline"
    pipe.save_pretrained(folder)
    return folder


def load(folder, cls=TextToAudioPipeline, **kwargs):
    loaded = cls.from_pretrained(folder, **kwargs)
    loaded.set_progress_bar_config(disable=True)
    return loaded


def test_tiny_presets_fit_together(pipe):
    assert pipe.tokenizer.latent_dim == 64 != AudioGenModel.from_preset("tiny").config.latent_dim
    assert pipe.transformer.config.latent_dim == pipe.tokenizer.latent_dim
    assert pipe.transformer.content_encoder.text_encoder.proj.in_features == pipe.text_encoder.dim == MINILM_DIM
    assert pipe.samples_per_latent == 640 and pipe.sample_rate == 16000


def test_save_writes_component_folders_and_a_text_encoder_reference(saved):
    index = json.loads((saved / "model_index.json").read_text())
    assert index["_class_name"] == ["pipeline", "TextToAudioPipeline"]
    assert index["transformer"] == ["dashflow.generation.pipelines", "AudioGenModel"]
    assert index["tokenizer"] == ["dashflow.codecs", "DashengTokenizer"]
    assert index["text_encoder"] == ["dashflow.generation.pipelines", "PipelineTextEncoder"]
    assert index["scheduler"] == ["diffusers", "FlowMatchEulerDiscreteScheduler"]
    assert index["latent_normalizer"] == [None, None]
    assert index["prompt_template"] is None and index["instruction"] is None
    for name in ("transformer", "tokenizer"):
        assert (saved / name / "model.safetensors").is_file() and (saved / name / "config.json").is_file()
    # the bundled MiniLM is saved by name only: no 90 MB copy
    assert sorted(p.name for p in (saved / "text_encoder").iterdir()) == ["config.json"]
    assert json.loads((saved / "text_encoder" / "config.json").read_text())["name"] == "minilm"


def test_round_trip_gives_the_same_audio(pipe, saved):
    loaded = load(saved)
    assert loaded.text_encoder.weights_hash() == pipe.text_encoder.weights_hash()
    a = pipe(["a dog barks", "rain on a roof"], duration=1.0, num_inference_steps=STEPS, seed=3)
    b = loaded(["a dog barks", "rain on a roof"], duration=1.0, num_inference_steps=STEPS, seed=3)
    assert isinstance(b, AudioGenerationOutput)
    np.testing.assert_array_equal(a.audios, b.audios)


def test_output_length_is_duration_in_whole_latent_frames(pipe):
    out = pipe(["a dog barks", "rain"], duration=[1.0, 0.5], num_inference_steps=STEPS, seed=0)
    # 1.0 s = 25 frames = 16000 samples; 0.5 s = 12.5 frames, rounded (half to even) to 12 = 7680 samples
    assert out.lengths == [16000, 7680] and out.audios.shape == (2, 16000)
    assert out.audios.dtype == np.float32 and np.isfinite(out.audios).all()
    assert np.abs(out.audios[0]).max() > 0 and not out.audios[1, 7680:].any()
    assert [a.shape[0] for a in out.trimmed()] == [16000, 7680]
    assert out.settings["durations"] == [1.0, 0.48] and out.sample_rate == 16000
    assert pipe("x", duration=0.01, num_inference_steps=1).lengths == [640]  # at least one frame


def test_same_seed_same_audio_other_seed_differs(pipe):
    kwargs = {"duration": 0.6, "num_inference_steps": STEPS}
    a = pipe("a bell rings", seed=11, **kwargs).audios
    np.testing.assert_array_equal(a, pipe("a bell rings", seed=11, **kwargs).audios)
    assert not np.allclose(a, pipe("a bell rings", seed=12, **kwargs).audios)
    generator = torch.Generator().manual_seed(11)
    np.testing.assert_array_equal(a, pipe("a bell rings", generator=generator, **kwargs).audios)


def test_guidance_one_runs_the_conditional_pass_only(pipe, monkeypatch):
    model = pipe.transformer
    batches = []
    velocity = model.velocity
    monkeypatch.setattr(model, "velocity", lambda x, t, cond, prepared=None: batches.append(
        (x.shape[0], bool(cond.context.abs().sum(dim=(1, 2)).eq(0).any()))) or velocity(x, t, cond, prepared))

    out = pipe("a dog barks", duration=1.0, num_inference_steps=STEPS, guidance_scale=1.0, seed=3)
    assert batches == [(1, False)] * STEPS  # no null-condition half (the no-op final call is skipped)
    content, mask = pipe.text_encoder.encode(["<|caption|> a dog barks"])
    cond = model.condition(content, mask, latent_lengths=25)
    latents = FlowMatching(model).sample(cond, num_steps=STEPS, guidance_scale=1.0,
                                         generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        reference = pipe.tokenizer.decode(latents.transpose(1, 2)).numpy()
    np.testing.assert_array_equal(out.audios, reference)

    batches.clear()
    guided = pipe("a dog barks", duration=1.0, num_inference_steps=STEPS, guidance_scale=5.0, seed=3)
    assert batches == [(2, True)] * STEPS  # [uncond; cond]
    assert not np.allclose(guided.audios, out.audios)


def test_bfloat16_pipeline_runs(saved):
    bf16 = load(saved, torch_dtype=torch.bfloat16)
    assert bf16.transformer.dtype == torch.bfloat16 and bf16.tokenizer.dtype == torch.bfloat16
    assert bf16.text_encoder.dtype == torch.float32  # Flan-T5 overflows in half precision
    out = bf16(["a dog barks", "wind"], duration=0.4, num_inference_steps=STEPS, seed=1, output_type="pt")
    assert out.audios.shape == (2, 6400) and out.audios.dtype == torch.float32 and out.audios.isfinite().all()
    assert out.settings["dtype"] == "bfloat16"
    half = load(saved).to(torch.float16)  # diffusers' .to casts every component
    assert half.transformer.dtype == half.text_encoder.dtype == torch.float16
    assert np.isfinite(half("a dog barks", duration=0.4, num_inference_steps=1, seed=1).audios).all()


def test_no_duration_uses_the_predicted_global_duration_capped(saved):
    class ShortClips(TextToAudioPipeline):
        max_duration = 3.0

    pipe = ShortClips(**load(saved).components)
    pipe.set_progress_bar_config(disable=True)
    head = pipe.transformer.content_adapter.global_duration_mlp[3]
    with torch.no_grad():
        head.weight.zero_()
        head.bias.fill_(np.log(2.0 + 1.0))  # log(seconds + offset 1): 2 s = 50 frames
    out = pipe(["a", "b"], num_inference_steps=1, guidance_scale=1.0)
    assert out.lengths == [32000, 32000] and out.settings["duration_requested"] is None
    with torch.no_grad():
        head.bias.fill_(50.0)  # absurd: capped at the pipeline's maximum
    assert pipe("a", num_inference_steps=1, guidance_scale=1.0).lengths == [3 * 16000]
    with torch.no_grad():
        head.bias.fill_(-50.0)  # negative seconds: one frame
    assert pipe("a", num_inference_steps=1, guidance_scale=1.0).lengths == [640]


@pytest.mark.parametrize("call, message", [
    ({"prompt": ""}, "is empty"),
    ({"prompt": "   "}, "is empty"),
    ({"prompt": ["ok", " \n"]}, "is empty"),
    ({"prompt": "<|caption|>  "}, "is empty"),
    ({"prompt": []}, "no prompt"),
    ({"duration": 0.0}, "outside (0, 60]"),
    ({"duration": -1.0}, "outside (0, 60]"),
    ({"duration": float("nan")}, "outside"),
    ({"duration": 60.5}, "outside (0, 60]"),
    ({"duration": [1.0]}, "1 durations for 2 prompts"),
    ({"num_inference_steps": 0}, "num_inference_steps"),
    ({"guidance_scale": 0.5}, "guidance_scale"),
    ({"sway_coef": float("inf")}, "sway_coef"),
    ({"output_type": "pil"}, "output_type"),
    ({"seed": 1, "generator": torch.Generator()}, "seed or generator"),
    ({"seed": [1]}, "seed must be"),
])
def test_bad_arguments_raise_one_line(pipe, call, message):
    kwargs = {"prompt": ["a dog", "a cat"], "duration": 1.0, "num_inference_steps": 1} | call
    with pytest.raises(DashflowError, match=re.escape(message)) as info:
        pipe(**kwargs)
    assert "\n" not in str(info.value)


def test_prompt_templates():
    assert format_prompt("  a dog barks ") == "<|caption|> a dog barks"
    assert format_prompt("a dog", "{prompt}") == "a dog"
    structured = "<|caption|> a street <|sfx|> a car horn"
    assert format_prompt(structured) == structured
    assert format_prompt(structured, "{prompt}") == structured  # untagged models take it as text
    assert TextToAudioPipeline.default_prompt_template == "<|caption|> {prompt}"
    assert format_prompt("piano", TextToMusicPipeline.default_prompt_template) == "<|caption|> piano <|music|> piano"


def test_music_pipeline_defaults_and_task_switch(saved, tmp_path):
    ttm = load(saved, TextToMusicPipeline)  # a pipeline saved with the default template takes the task's
    assert ttm.format_prompts("calm piano") == ["<|caption|> calm piano <|music|> calm piano"]
    assert ttm.max_duration == 120.0 > TextToAudioPipeline.max_duration
    assert ttm.duration_frames(90.0, 1) == [2250]
    with pytest.raises(DashflowError, match="outside"):
        ttm.duration_frames(121.0, 1)
    assert load_pipeline(saved).task == "tta" and load_pipeline(saved, task="ttm").task == "ttm"

    ttm.register_to_config(prompt_template="{prompt}")  # a model trained on plain captions
    ttm.save_pretrained(tmp_path / "ttm")
    assert json.loads((tmp_path / "ttm" / "model_index.json").read_text())["_class_name"] == ["pipeline",
                                                                                            "TextToMusicPipeline"]
    reloaded = load_pipeline(tmp_path / "ttm")
    assert isinstance(reloaded, TextToMusicPipeline) and reloaded.format_prompts("piano") == ["piano"]
    assert load(tmp_path / "ttm").format_prompts("piano") == ["piano"]
    with pytest.raises(DashflowError, match="no {prompt} field"):
        TextToAudioPipeline(**load(saved).components, prompt_template="<|caption|>")


def test_mismatched_components_are_refused(pipe):
    parts = dict(pipe.components)
    with pytest.raises(DashflowError, match="64-d latents but the tokenizer decodes 32-d"):
        TextToAudioPipeline(**parts | {"tokenizer": DashengTokenizer.from_preset("tiny", embed_dim=32,
                                                                                 decoder_embed_dim=32)})
    with pytest.raises(DashflowError, match="384-d states but the model's text projection takes 32-d"):
        TextToAudioPipeline(**parts | {"transformer": tiny_model(pipe.tokenizer, text_dim=32)})
    with pytest.raises(DashflowError, match="normalizer has 8 channels"):
        TextToAudioPipeline(**parts | {"latent_normalizer": LatentNormalizer(channels=8)})
    with pytest.raises(DashflowError, match="scheduler"):
        TextToAudioPipeline(**parts | {"scheduler": FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True)})


def test_loading_errors_are_one_line(saved, tmp_path):
    def check(folder, message):
        with pytest.raises(DashflowError, match=re.escape(message)) as info:
            TextToAudioPipeline.from_pretrained(folder)
        assert "\n" not in str(info.value)

    check(tmp_path / "missing", "pipeline folder not found")
    (tmp_path / "empty").mkdir()
    check(tmp_path / "empty", "not a pipeline folder")
    check(saved / "tokenizer", "not a pipeline folder (no model_index.json) and not a Dasheng-AudioGen model")
    broken = tmp_path / "broken"
    shutil.copytree(saved, broken)
    shutil.rmtree(broken / "tokenizer")
    check(broken, "component folder tokenizer/ is missing")
    corrupt = tmp_path / "corrupt"
    shutil.copytree(saved, corrupt)
    (corrupt / "transformer" / "model.safetensors").write_bytes(b"\x00" * 64)
    check(corrupt, "unreadable weights")
    mismatched = tmp_path / "mismatched"
    shutil.copytree(saved, mismatched)
    shutil.rmtree(mismatched / "transformer")
    AudioGenModel.from_preset("tiny", text_embed_dim=MINILM_DIM).save_pretrained(mismatched / "transformer")
    check(mismatched, "16-d latents but the tokenizer decodes 64-d")


def test_latent_normalizer_is_saved_loaded_and_applied(pipe, tmp_path):
    normalizer = LatentNormalizer(channels=pipe.tokenizer.latent_dim)
    normalizer.mean.fill_(0.5)
    normalizer.std.fill_(2.0)
    with_norm = TextToAudioPipeline(**pipe.components | {"latent_normalizer": normalizer})
    with_norm.set_progress_bar_config(disable=True)
    with_norm.save_pretrained(tmp_path / "norm")
    assert json.loads((tmp_path / "norm" / "model_index.json").read_text())["latent_normalizer"] == \
        ["dashflow.generation.pipelines", "LatentNormalizer"]
    loaded = load(tmp_path / "norm")
    torch.testing.assert_close(loaded.latent_normalizer.std, normalizer.std)
    kwargs = {"duration": 0.4, "num_inference_steps": STEPS, "seed": 2}
    np.testing.assert_array_equal(loaded("a dog", **kwargs).audios, with_norm("a dog", **kwargs).audios)
    assert not np.allclose(with_norm("a dog", **kwargs).audios, pipe("a dog", **kwargs).audios)


def test_instruction_phrase_replaces_the_stored_instruction(pipe):
    model = tiny_model(pipe.tokenizer, task_instruction_dim=MINILM_DIM)
    parts = dict(pipe.components) | {"transformer": model}
    stored = TextToAudioPipeline(**parts)
    phrased = TextToAudioPipeline(**parts, instruction="generate music from the description")
    for p in (stored, phrased):
        p.set_progress_bar_config(disable=True)
    kwargs = {"duration": 0.4, "num_inference_steps": STEPS, "seed": 2}
    out = phrased("a violin", **kwargs)
    assert out.settings["instruction"] == "generate music from the description"
    assert not np.allclose(out.audios, stored("a violin", **kwargs).audios)
    with pytest.raises(DashflowError, match="instruction states are 384-d but the model's instructions are 32-d"):
        TextToAudioPipeline(**pipe.components, instruction="music")("a violin", **kwargs)


def test_local_folder_text_encoder_is_copied_into_the_pipeline(tmp_path):
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "dog", "barks", "rain", "falls"]
    source = tmp_path / "bert"
    source.mkdir()
    (source / "vocab.txt").write_text("\n".join(words) + "\n")
    BertTokenizerFast(vocab_file=str(source / "vocab.txt")).save_pretrained(source)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(words), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=64)).save_pretrained(source)
    pipe = build_tiny_pipeline(text_encoder=load_text_encoder(source))
    pipe.save_pretrained(tmp_path / "pipeline")
    shutil.rmtree(source)  # the pipeline folder no longer needs the original
    copied = tmp_path / "pipeline" / "text_encoder"
    assert json.loads((copied / "config.json").read_text())["name"] == "encoder"
    assert (copied / "encoder" / "model.safetensors").is_file() and (copied / "encoder" / "vocab.txt").is_file()
    loaded = load(tmp_path / "pipeline")
    assert isinstance(loaded.text_encoder, PipelineTextEncoder)
    assert loaded.text_encoder.weights_hash() == pipe.text_encoder.weights_hash()
    kwargs = {"duration": 0.4, "num_inference_steps": 1, "seed": 0}
    np.testing.assert_array_equal(loaded("a dog barks", **kwargs).audios, pipe("a dog barks", **kwargs).audios)


def test_bare_model_folder_loads_with_the_components_its_config_names(pipe, tmp_path):
    pipe.tokenizer.save_pretrained(tmp_path / "tokenizer")
    model = tiny_model(pipe.tokenizer, tokenizer_name=str(tmp_path / "tokenizer"), text_encoder_name="minilm")
    model.save_pretrained(tmp_path / "model")  # the layout of a local mispeech/Dasheng-AudioGen copy
    bare = load(tmp_path / "model")
    assert bare.text_encoder.name == "minilm" and bare.transformer.config.latent_dim == 64
    assert bare("a dog", duration=0.4, num_inference_steps=1).lengths == [6400]
