"""Flow matching: the training objective and latent normalisation (``flow``) and the 25-step
classifier-free-guided Euler sampler on diffusers' FlowMatchEulerDiscreteScheduler (``sampler``)."""
