"""Shared plumbing of the dashflow suite: errors, audio I/O, configs, data, checkpoints, CLI."""

from dashflow.errors import DashflowError

__all__ = ["DashflowError"]
