"""The text-to-audio pipeline steered: diffusers' argument names (negative_prompt,
num_waveforms_per_prompt, latents, callback_on_step_end, audio_length_in_s), audio-to-audio,
inpainting, continuation and long-form windows, and their one-line errors (tiny random pipeline)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from dashflow.generation.pipelines.steering import FADE_SECONDS, crossfade_weights
from diffusers.utils.torch_utils import randn_tensor

from dashflow.errors import DashflowError

from tests.generation.pipelines.test_pipelines import STEPS, build_tiny_pipeline

SR = 16000


@pytest.fixture(scope="module")
def pipe():
    torch.set_num_threads(1)
    return build_tiny_pipeline()


@pytest.fixture(scope="module")
def clip() -> torch.Tensor:
    """2 s of a decaying two-tone signal (not silent)."""
    t = torch.arange(2 * SR) / SR
    return 0.3 * (torch.sin(2 * torch.pi * 220 * t) + 0.5 * torch.sin(2 * torch.pi * 1234 * t)) * torch.exp(-t)


def run(pipe, prompt="a dog barks", **kwargs):
    return pipe(prompt, **{"num_inference_steps": STEPS, "seed": 0, **kwargs})


def test_audio_length_in_s_is_duration(pipe):
    np.testing.assert_array_equal(run(pipe, audio_length_in_s=0.4).audios, run(pipe, duration=0.4).audios)
    with pytest.raises(DashflowError, match="not both"):
        run(pipe, audio_length_in_s=0.4, duration=0.4)


def test_num_waveforms_per_prompt_repeats_each_prompt_with_its_own_seed(pipe):
    out = run(pipe, ["a dog", "rain"], audio_length_in_s=0.4, num_waveforms_per_prompt=2, seed=5)
    assert out.audios.shape == (4, 6400) and out.settings["seeds"] == [5, 6, 7, 8]
    assert out.settings["prompts"] == ["<|caption|> a dog"] * 2 + ["<|caption|> rain"] * 2
    alone = run(pipe, "rain", audio_length_in_s=0.4, seed=8)  # output 3 = prompt 1's second waveform
    np.testing.assert_allclose(out.audios[3], alone.audios[0], atol=1e-5, rtol=0)
    assert not np.allclose(out.audios[2], out.audios[3])


def test_latents_are_the_starting_noise(pipe):
    shape = (1, pipe.transformer.config.latent_dim, 10)
    noise = randn_tensor(shape, generator=torch.Generator().manual_seed(3), dtype=torch.float32)
    given = run(pipe, latents=noise, seed=None)
    assert given.lengths == [6400]  # no length given: the latents' 10 frames
    np.testing.assert_array_equal(given.audios, run(pipe, audio_length_in_s=0.4, seed=3).audios)
    with pytest.raises(DashflowError, match="noise shape"):
        run(pipe, audio_length_in_s=0.8, latents=noise, seed=None)


def test_negative_prompt_changes_the_result_and_is_recorded(pipe, monkeypatch):
    batches = []
    velocity = pipe.transformer.velocity
    monkeypatch.setattr(pipe.transformer, "velocity", lambda x, t, c, p=None: batches.append(x.shape[0])
                        or velocity(x, t, c, p))
    plain = run(pipe, audio_length_in_s=0.4)
    out = run(pipe, audio_length_in_s=0.4, negative_prompt="wind", negative_guidance_scale=2.0)
    assert batches == [2] * STEPS + [3] * STEPS  # [uncond; cond] then [uncond; cond; negative]
    assert not np.allclose(out.audios, plain.audios)
    assert out.settings["negative_prompts"] == ["<|caption|> wind"] and out.settings["negative_guidance_scale"] == 2.0
    assert plain.settings["negative_prompts"] is None


def test_callback_on_step_end_follows_diffusers(pipe):
    calls = []

    def callback(p, step, timestep, kwargs):
        calls.append((p is pipe, step, sorted(kwargs)))
        return {"latents": kwargs["latents"] * 0} if step == STEPS - 1 else {}

    out = run(pipe, audio_length_in_s=0.4, callback_on_step_end=callback,
              callback_on_step_end_tensor_inputs=["latents", "velocity"])
    assert calls == [(True, i, ["latents", "velocity"]) for i in range(STEPS)]
    with torch.no_grad():
        silent = pipe.tokenizer.decode(torch.zeros(1, 10, pipe.tokenizer.latent_dim)).numpy()
    np.testing.assert_allclose(out.audios, silent, atol=1e-6)  # the replaced (zero) latents were decoded
    assert pipe._callback_tensor_inputs == ["latents", "velocity"]


def test_audio_to_audio_keeps_the_length_and_strength_one_ignores_the_clip(pipe, clip):
    out = run(pipe, init_audio=clip, strength=0.5)
    assert out.lengths == [2 * SR] and out.settings["steering"]["strength"] == 0.5
    assert len(out.settings["steering"]["audio_sha256"]) == 64
    assert np.abs(out.audios[0]).max() > 0
    frames = pipe.tokenizer.encode(clip[None]).mask.sum().item()
    ignored = run(pipe, init_audio=clip, strength=1.0)
    plain = run(pipe, audio_length_in_s=frames / pipe.transformer.latent_rate)
    np.testing.assert_array_equal(ignored.audios[0, :2 * SR], plain.audios[0, :2 * SR])
    assert run(pipe, init_audio=clip).settings["steering"]["strength"] == 0.8  # diffusers' default
    assert not np.allclose(run(pipe, init_audio=clip, strength=0.1).audios, out.audios)


def test_inpainting_keeps_the_input_outside_the_regions(pipe, clip):
    out = run(pipe, inpaint_audio=clip, inpaint_regions=[(0.5, 1.0), (1.5, 1.75)])
    audio = out.audios[0]
    assert out.lengths == [2 * SR] and out.settings["steering"]["regions"] == [[0.5, 1.0], [1.5, 1.75]]
    fade = round(FADE_SECONDS * SR)
    kept = np.r_[0:int(0.5 * SR) - fade, int(1.0 * SR) + fade:int(1.5 * SR) - fade, int(1.75 * SR) + fade:2 * SR]
    np.testing.assert_array_equal(audio[kept], clip.numpy()[kept])
    assert np.abs(audio[int(0.55 * SR):int(0.95 * SR)] - clip.numpy()[int(0.55 * SR):int(0.95 * SR)]).mean() > 1e-3


def test_a_clip_of_any_length_comes_back_whole(pipe, clip):
    odd = clip[:2 * SR - 300]  # not a whole number of latent frames: padded to whole ones, then cut
    for kwargs in ({"init_audio": odd}, {"inpaint_audio": odd, "inpaint_regions": [(1.5, odd.numel() / SR)]}):
        out = run(pipe, **kwargs)
        assert out.lengths == [odd.numel()] and not out.audios[0, odd.numel():].any()  # zero past the end


def test_crossfade_weights_fade_on_the_kept_side():
    w = crossfade_weights(100, [(40, 60)], fade=10)
    assert not w[40:60].any() and (w[:30] == 1).all() and (w[70:] == 1).all()
    assert (np.diff(w[30:41].numpy()) < 0).all() and (np.diff(w[59:70].numpy()) > 0).all()


def test_continuation_keeps_the_clip_and_adds_the_seconds(pipe, clip):
    out = run(pipe, continue_audio=clip, audio_length_in_s=1.0)
    kept = 2 * SR // 640
    assert out.lengths == [(kept + 25) * 640] and out.settings["steering"]["added_seconds"] == 1.0
    fade = round(FADE_SECONDS * SR)
    np.testing.assert_array_equal(out.audios[0, :2 * SR - fade], clip.numpy()[:2 * SR - fade])
    assert np.abs(out.audios[0, 2 * SR:]).max() > 0


def test_long_form_windows(pipe, monkeypatch):
    lengths = []
    velocity = pipe.transformer.velocity
    monkeypatch.setattr(pipe.transformer, "velocity", lambda x, t, c, p=None: lengths.append(x.shape[2])
                        or velocity(x, t, c, p))
    out = run(pipe, audio_length_in_s=3.0, window_length_in_s=1.0, window_overlap_in_s=0.4)
    assert out.lengths == [3 * SR] and set(lengths) == {25}  # every model call sees one 1 s window
    assert out.settings["window_length_in_s"] == 1.0 and out.settings["window_overlap_in_s"] == 0.4
    assert np.isfinite(out.audios).all() and np.abs(out.audios[0, -SR:]).max() > 0
    short = run(pipe, audio_length_in_s=0.8, window_length_in_s=1.0)  # fits one window: one pass
    np.testing.assert_array_equal(short.audios, run(pipe, audio_length_in_s=0.8).audios)
    long = run(pipe, audio_length_in_s=61.0, window_length_in_s=1.0, num_inference_steps=1)
    assert long.lengths == [61 * SR]  # beyond max_duration with windows


def test_chunked_decoding_matches_decoding_at_once(pipe):
    latents = torch.randn(1, pipe.transformer.config.latent_dim, 60)
    whole = pipe.decode(latents, torch.tensor([60]))
    chunked = pipe.decode_in_chunks(latents, chunk=16, context=8)
    torch.testing.assert_close(chunked, whole, atol=1e-4, rtol=0)


def test_continuation_in_windows(pipe, clip):
    out = run(pipe, continue_audio=clip, audio_length_in_s=2.0, window_length_in_s=1.0)
    fade = round(FADE_SECONDS * SR)
    assert out.lengths == [(2 * SR // 640 + 50) * 640]
    np.testing.assert_array_equal(out.audios[0, :2 * SR - fade], clip.numpy()[:2 * SR - fade])


@pytest.mark.parametrize("kwargs, message", [
    ({"init_audio": "CLIP", "strength": 0.0}, "strength must be in (0, 1]"),
    ({"init_audio": "CLIP", "strength": 1.5}, "strength must be in (0, 1]"),
    ({"strength": 0.5}, "strength applies to init_audio"),
    ({"inpaint_audio": "CLIP", "inpaint_regions": [(1.5, 2.5)]}, "lies outside the clip (0:2.000 s)"),
    ({"inpaint_audio": "CLIP", "inpaint_regions": [(-0.5, 0.5)]}, "lies outside the clip"),
    ({"inpaint_audio": "CLIP", "inpaint_regions": [(1.0, 1.0)]}, "is empty"),
    ({"inpaint_audio": "CLIP", "inpaint_regions": []}, "inpaint_regions is empty"),
    ({"inpaint_audio": "CLIP", "inpaint_regions": [(0.2, 1.0), (0.8, 1.2)]}, "overlap"),
    ({"inpaint_audio": "CLIP", "inpaint_regions": [(0.2,)]}, "must be (start, end)"),
    ({"inpaint_audio": "CLIP"}, "inpaint_regions is empty"),
    ({"inpaint_regions": [(0.2, 0.4)]}, "apply to inpaint_audio"),
    ({"init_audio": torch.zeros(SR)}, "is silent"),
    ({"init_audio": torch.full((SR,), float("nan"))}, "NaN or infinite"),
    ({"init_audio": torch.ones(2, SR)}, "mono float waveform"),
    ({"init_audio": "not audio"}, "mono float waveform"),
    ({"init_audio": 0.1 * torch.ones(61 * SR)}, "over the 60 s limit"),
    ({"init_audio": 0.1 * torch.ones(10)}, "the codec needs at least"),
    ({"init_audio": "CLIP", "inpaint_audio": "CLIP"}, "pass one of"),
    ({"init_audio": "CLIP", "audio_length_in_s": 1.0}, "sets the output's length"),
    ({"continue_audio": "CLIP"}, "continue_audio needs audio_length_in_s"),
    ({"continue_audio": "CLIP", "audio_length_in_s": 59.0}, "outside (0, 58"),
    ({"negative_prompt": "wind", "guidance_scale": 1.0}, "negative_prompt needs guidance_scale > 1"),
    ({"negative_prompt": ["a", "b"]}, "2 negative prompts for 1 prompts"),
    ({"negative_prompt": "  "}, "is empty"),
    ({"negative_prompt": "wind", "negative_guidance_scale": -1}, "negative_guidance_scale must be"),
    ({"num_waveforms_per_prompt": 0}, "num_waveforms_per_prompt must be an integer >= 1"),
    ({"num_waveforms_per_prompt": 1.5}, "num_waveforms_per_prompt must be an integer >= 1"),
    ({"audio_length_in_s": 61.0}, "pass window_length_in_s"),
    ({"audio_length_in_s": 5.0, "window_length_in_s": 0.0}, "window_length_in_s 0.0 s is outside"),
    ({"audio_length_in_s": 5.0, "window_length_in_s": 1.0, "window_overlap_in_s": 1.0}, "window_overlap_in_s"),
    ({"audio_length_in_s": [1.0, None], "window_length_in_s": 1.0, "prompt": ["a", "b"]}, "one audio_length_in_s"),
    ({"window_overlap_in_s": 1.0}, "needs window_length_in_s"),
    ({"init_audio": "CLIP", "window_length_in_s": 1.0}, "applies to plain generation and continue_audio"),
    ({"audio_length_in_s": 5.0, "window_length_in_s": 1.0, "latents": torch.zeros(1, 64, 125)}, "latents cannot"),
    ({"latents": torch.zeros(2, 64, 10)}, "latents must be a tensor [1, 64, T]"),
    ({"latents": [0.0]}, "latents must be a tensor"),
    ({"callback_on_step_end": "yes"}, "must be callable"),
    ({"callback_on_step_end_tensor_inputs": ["noise_pred"]}, "not offered"),
    ({"seed": 1, "num_waveforms_per_prompt": 2, "generator": torch.Generator()}, "seed or generator"),
    ({"seed": [1], "num_waveforms_per_prompt": 2}, "seed must be an int or 2 ints"),
])
def test_bad_steering_arguments_raise_one_line(pipe, clip, kwargs, message):
    kwargs = {key: clip if isinstance(value, str) and value == "CLIP" else value for key, value in kwargs.items()}
    with pytest.raises(DashflowError, match=re.escape(message)) as info:
        pipe(**{"prompt": "a dog", "num_inference_steps": 1, **kwargs})
    assert "\n" not in str(info.value)
