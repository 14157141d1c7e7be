"""Opens this folder with diffusers' DiffusionPipeline (needs dashflow installed)."""

from dashflow.generation.pipelines import TextToAudioPipeline  # noqa: F401
