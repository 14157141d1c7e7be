"""The queue under `dashflow serve`: one job at a time in arrival order, a full queue refused,
cancellation while queued (never runs) and while running (stops at the next step)."""

import asyncio
import threading
import time

import pytest

from dashflow.commands.serve_jobs import Busy, Cancelled, Job, Slot, wait_for_job


def test_jobs_run_one_at_a_time_in_arrival_order():
    slot, order, running = Slot("m", max_queued=8), [], []

    def work(i):
        def run(job):
            running.append(i)
            assert len(running) == 1, "two jobs ran at once"
            time.sleep(0.02)
            order.append(i)
            running.remove(i)
            return i
        return run

    futures = [slot.submit(Job(work(i), f"job {i}")) for i in range(5)]
    assert [f.result(timeout=5) for f in futures] == list(range(5))
    assert order == list(range(5))
    assert slot.pending == 0


def test_a_full_queue_is_refused_and_frees_up():
    slot, gate = Slot("m", max_queued=2), threading.Event()
    first = slot.submit(Job(lambda job: gate.wait(5), "blocker"))
    second = slot.submit(Job(lambda job: "queued", "queued"))
    with pytest.raises(Busy, match="2 requests queued"):
        slot.submit(Job(lambda job: None, "third"))
    gate.set()
    assert first.result(timeout=5) and second.result(timeout=5) == "queued"
    assert slot.submit(Job(lambda job: "again", "again")).result(timeout=5) == "again"


def test_a_cancelled_queued_job_never_runs_and_a_running_one_stops_at_its_next_step():
    slot, gate, steps, ran = Slot("m", max_queued=4), threading.Event(), [], []

    def long_job(job):
        for step in range(1, 1000):
            job.advance(step, 1000)
            steps.append(step)
            gate.set()
            time.sleep(0.01)
        return "finished"

    async def scenario():
        running = asyncio.ensure_future(wait_for_job(slot, Job(long_job, "long")))
        queued_job = Job(lambda job: ran.append("queued"), "queued")
        queued = asyncio.ensure_future(wait_for_job(slot, queued_job))
        while not gate.is_set():
            await asyncio.sleep(0.01)
        queued.cancel()       # e.g. the page's Cancel button
        running.cancel()
        for task in (queued, running):
            with pytest.raises(asyncio.CancelledError):
                await task
        return queued_job

    queued_job = asyncio.run(scenario())
    deadline = time.time() + 5
    while slot.pending and time.time() < deadline:
        time.sleep(0.01)
    assert slot.pending == 0, "the cancelled jobs still hold the slot"
    assert ran == [] and queued_job.cancel.is_set()
    assert len(steps) < 200, f"the running job went on for {len(steps)} steps after its cancellation"
    assert slot.submit(Job(lambda job: "next", "next")).result(timeout=5) == "next"


def test_a_disconnected_client_cancels_its_job():
    slot = Slot("m", max_queued=2)

    def slow(job):
        for step in range(500):
            job.advance(step, 500)
            time.sleep(0.01)

    async def gone():
        return True

    with pytest.raises(Cancelled, match="disconnected"):
        asyncio.run(wait_for_job(slot, Job(slow, "slow"), disconnected=gone))
    deadline = time.time() + 5
    while slot.pending and time.time() < deadline:
        time.sleep(0.01)
    assert slot.pending == 0


def test_progress_is_reported_while_waiting():
    slot, seen = Slot("m", max_queued=2), []

    def stepped(job):
        for step in range(1, 6):
            job.advance(step, 5)
            time.sleep(0.15)
        return "done"

    result = asyncio.run(wait_for_job(slot, Job(stepped, "stepped", total=5),
                                      on_progress=lambda job: seen.append((job.step, job.total))))
    assert result == "done"
    assert seen and all(total == 5 for _, total in seen) and seen[-1][0] >= 3
