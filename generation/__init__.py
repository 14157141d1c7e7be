"""Generation: the Dasheng-AudioGen / UniFlow-Audio DiT, its flow-matching objective and sampler.

Nothing heavy is imported here (``dashflow`` imports this package for its subcommands); import
the subpackages below directly: ``model``, ``sampling``, ``pipelines``, ``training``, ``cli``
(console scripts) and ``demo/`` (the bundled models). Shapes: B batch, C latent channels (1280), T latent frames (25 Hz),
L content tokens, D_in text-encoder width. Latents are ``[B, C, T]`` throughout this package:
transpose the tokenizer's ``[B, T, C]`` once on the way in and out.

Model (``dashflow.generation.model.audiogen``)::

    model = AudioGenModel.from_preset("paper" | "audiogen" | "small" | "tiny", **config_overrides)
    model = AudioGenModel.from_pretrained(folder_or_repo_id, torch_dtype=None, device="cpu")
    model.save_pretrained(folder)                      # config.json + model.safetensors
    model.enable_gradient_checkpointing()              # per DiT block
    model.set_instruction(embeddings [Li, Di])         # fixed task instruction (buffer)
    cond = model.condition(content [B, L, D_in], content_mask [B, L], *, content_kind="text",
                           is_time_aligned=None, instruction=None, instruction_mask=None,
                           durations=None [B, L] seconds, latent_lengths=None [B] | int)
    out = model(sample [B, C, T], timesteps [B], content, content_mask, latent_mask [B, T], *,
                content_kind="text", is_time_aligned=None, durations=None, instruction=None,
                instruction_mask=None, drop_condition=None [B])   # .velocity/.global_/.local_duration
    v = model.velocity(sample, timesteps, cond)        # one backbone call
    prepared = model.prepare(cond)                     # per-generation constants, computed once
    v = model.velocity(sample, timesteps, cond, prepared)   # the same, without recomputing them

Flow matching (``dashflow.generation.sampling.cfm``): one object owns the loss and the sampler::

    flow = FlowMatching(model_or_wrapped, config=FlowMatchingConfig(), normalizer=None)
    losses = flow.loss(latents [B, C, T], latent_mask [B, T], content [B, L, D_in], content_mask [B, L], *,
                       content_kind="text", is_time_aligned=None, durations=None, instruction=None,
                       instruction_mask=None, generator=None)
    losses["loss"].backward()                          # also "flow", "local_duration", "global_duration"
    latents = flow.sample(cond, *, num_steps=25, guidance_scale=5.0, negative=None, negative_scale=1.0,
                          sway_coef=-1.0, scheduler=None, generator=None, noise=None, init=None [B, C, T],
                          strength=1.0, keep=None [B, T], callback=None, callback_inputs=("latents",),
                          skip_final_step=True, truncate_timesteps=True, progress=False)
                                                       # [B, C, T]; trim with cond.latent_mask
    normalizer = LatentNormalizer.fit(latents_or_(latents, mask)_iterable)   # only with
                                                       # FlowMatchingConfig(normalize_latents=True)
    latents = sample_windows(sample_fn, known [B, C, K], total, window, overlap)   # long-form (``windows``)

Text-to-audio / music: ``content`` is the text encoder's states and mask (the model projects
them); speech enhancement: build the model with ``audio_content_dim=1280``, pass the noisy
latents ``[B, T, C]`` as content with ``content_kind="audio"``, ``durations`` of ``1 / 25`` s per
frame, ``latent_lengths`` = the input lengths, and ``guidance_scale=1.0``.
"""
