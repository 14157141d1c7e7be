"""diffusers pipelines: text-to-audio / text-to-music (``audio``) and speech enhancement
(``speech_enhancement``), with the shared component plumbing (``components``).

``model_index.json`` records the generator's components under this package, so diffusers' loader
(``DiffusionPipeline.from_pretrained``) finds them here; it also needs ``ModelMixin`` here. Codecs
are recorded under their own module; folders saved before that name the codec class here, which
resolves through the codec registry (:func:`dashflow.codecs.codec_class`).
"""

from dashflow.generation.model.audiogen import AudioGenModel
from dashflow.generation.model.denoiser import LatentDenoiser
from dashflow.generation.pipelines.audio import (
    PIPELINES,
    AudioGenerationPipeline,
    TextToAudioPipeline,
    TextToMusicPipeline,
    load_pipeline,
)
from dashflow.generation.pipelines.components import PipelineTextEncoder
from dashflow.generation.pipelines.speech_enhancement import SpeechEnhancementPipeline
from dashflow.generation.sampling.flow import LatentNormalizer
from diffusers import ModelMixin

from dashflow.codecs import codec_class

__all__ = ["PIPELINES", "AudioGenModel", "AudioGenerationPipeline", "LatentDenoiser",
           "LatentNormalizer", "ModelMixin", "PipelineTextEncoder", "SpeechEnhancementPipeline",
           "TextToAudioPipeline", "TextToMusicPipeline", "load_pipeline"]


def __getattr__(name: str) -> type:
    """Codec classes named by folders saved before codecs were recorded under their own module."""
    return codec_class(name)
