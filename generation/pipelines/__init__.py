"""diffusers pipelines: text-to-audio / text-to-music (``audio``) and speech enhancement
(``speech_enhancement``), on a shared base (``components``), steered by input audio
(``steering``) and long-form windows (``long_form``); ``tasks`` is the task registry.

``model_index.json`` records the generator's components under this package, so diffusers' loader
(``DiffusionPipeline.from_pretrained``) finds them here; it also needs ``ModelMixin`` here. Codecs
are recorded under their own module; folders saved before that name the codec class here, which
resolves through the codec registry (:func:`dashflow.codecs.codec_class`). Names are imported on
first use, so the torch-free ``tasks`` registry can be read without loading torch.
"""

from __future__ import annotations

import importlib

from dashflow.codecs import codec_class

_EXPORTS = {
    "AudioGenModel": "dashflow.generation.model.audiogen",
    "LatentDenoiser": "dashflow.generation.model.denoiser",
    "LatentNormalizer": "dashflow.generation.sampling.flow",
    "AudioGenerationPipeline": "dashflow.generation.pipelines.audio",
    "TextToAudioPipeline": "dashflow.generation.pipelines.audio",
    "TextToMusicPipeline": "dashflow.generation.pipelines.audio",
    "load_pipeline": "dashflow.generation.pipelines.audio",
    "PipelineTextEncoder": "dashflow.generation.pipelines.components",
    "SpeechEnhancementPipeline": "dashflow.generation.pipelines.speech_enhancement",
    "ModelMixin": "diffusers",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> type:
    """The exported names, and codec classes named by folders saved before codecs were recorded
    under their own module."""
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    return codec_class(name)
