"""Opens this folder with diffusers' DiffusionPipeline (needs dashflow installed)."""

from dashflow.generation.pipelines import SpeechEnhancementPipeline, TextToAudioPipeline, TextToMusicPipeline  # noqa: F401
