"""Commands that compose several packages (a codec and eval at once): part of the CLI home, so
they may import every package, as :mod:`dashflow.cli` does."""
