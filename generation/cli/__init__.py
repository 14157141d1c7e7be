"""Console scripts: ``generate`` (``generate``), ``enhance`` (``enhance``) and the ``dashflow
cache-latents`` subcommand (``cache_latents``). Heavy modules are imported inside the commands."""
