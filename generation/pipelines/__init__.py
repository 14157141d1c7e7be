"""diffusers pipelines: text-to-audio / text-to-music (``audio``) and speech enhancement
(``speech_enhancement``), with the shared component plumbing (``components``).

``model_index.json`` records every dashflow component under this package, so diffusers' loader
(``DiffusionPipeline.from_pretrained``) finds them here; it also needs ``ModelMixin`` here.
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
from dashflow.tokenizer.model import DashengTokenizer
from diffusers import ModelMixin

__all__ = ["PIPELINES", "AudioGenModel", "AudioGenerationPipeline", "DashengTokenizer", "LatentDenoiser",
           "LatentNormalizer", "ModelMixin", "PipelineTextEncoder", "SpeechEnhancementPipeline",
           "TextToAudioPipeline", "TextToMusicPipeline", "load_pipeline"]
