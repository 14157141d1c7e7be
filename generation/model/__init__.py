"""The trained networks: the Dasheng-AudioGen / UniFlow DiT (``audiogen``, built from ``dit`` and
``content_adapter``) and the latent speech-enhancement denoiser (``denoiser``)."""
