"""How ``dashflow serve`` runs work: one queue per loaded model, jobs one at a time in arrival
order on the model's own thread, each cancellable while queued or between sampling steps.

A web request (page or HTTP API) is checked first, then becomes a :class:`Job` submitted to its
model's :class:`Slot`; the request's task awaits it with :func:`wait_for_job`, which reports
progress and cancels the job when the task is cancelled (the page's Cancel button) or the client
disconnects, so an abandoned request frees its slot at the next step instead of running to the end.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from dashflow.errors import DashflowError

POLL_SECONDS = 0.2


class Cancelled(Exception):
    """A job stopped because its request was cancelled or its client went away."""


class Busy(DashflowError):
    """A model's queue is full."""


@dataclass
class Job:
    """One request's work: ``run(job)`` on the model's thread; ``step`` / ``total`` its progress
    (sampling steps, or chunks); ``cancel`` set from the request's side."""

    run: Callable[[Job], Any]
    description: str
    cancel: threading.Event = field(default_factory=threading.Event)
    step: int = 0
    total: int = 0

    def advance(self, step: int, total: int) -> None:
        """Record progress; raise Cancelled when the request is gone (call between steps)."""
        self.step, self.total = step, total
        if self.cancel.is_set():
            raise Cancelled(self.description)


class Slot:
    """One loaded model's queue: at most ``max_queued`` jobs waiting or running, run one at a time."""

    def __init__(self, name: str, max_queued: int):
        self.name, self.max_queued = name, max_queued
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"serve-{name}")
        self._lock = threading.Lock()
        self.pending = 0

    def submit(self, job: Job) -> Future:
        with self._lock:
            if self.pending >= self.max_queued:
                raise Busy(f"the {self.name} model has {self.pending} requests queued (limit {self.max_queued}); "
                           "try again later")
            self.pending += 1
        future = self._executor.submit(self._run, job)
        future.add_done_callback(self._finished)
        return future

    def _run(self, job: Job):
        job.advance(0, job.total)  # a job cancelled while queued never starts
        return job.run(job)

    def _finished(self, _: Future) -> None:
        with self._lock:
            self.pending -= 1

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


async def wait_for_job(slot: Slot, job: Job, on_progress: Callable[[Job], None] | None = None,
                       disconnected: Callable[[], Awaitable[bool]] | None = None):
    """Submit ``job`` to ``slot`` and await its result, calling ``on_progress(job)`` every poll.

    Cancelling the awaiting task, or ``disconnected()`` turning true, cancels the job (a queued job
    is dropped, a running one stops at its next step) and raises Cancelled.
    """
    future = asyncio.wrap_future(slot.submit(job))
    try:
        while True:
            done, _ = await asyncio.wait({future}, timeout=POLL_SECONDS)
            if done:
                return future.result()
            if on_progress is not None:
                on_progress(job)
            if disconnected is not None and await disconnected():
                raise Cancelled(f"{job.description}: the client disconnected")
    except (asyncio.CancelledError, Cancelled):
        job.cancel.set()
        future.cancel()
        raise
