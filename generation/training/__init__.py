"""What the DiT and enhancer recipes build from besides :mod:`dashflow.training`: their configs,
frozen parts and losses (``text_to_audio``, ``speech_enhancement``), latent batches from audio or
a latent cache (``data``, ``latent_cache``)."""
