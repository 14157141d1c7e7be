"""A command stopped by SIGTERM (service managers, containers) or SIGINT (Ctrl-C) in the middle of
an atomic write leaves no ``.tmp`` file and ends with one ``error:`` line (exit 143 / 130)."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from dashflow.cli import run_guarded

# a command inside an atomic_path write, as every output of every command is written
WRITER = """
import signal, sys, time
from pathlib import Path
from dashflow.cli import run_guarded
from dashflow.outputs import atomic_path

signal.signal(signal.SIGINT, signal.default_int_handler)  # as at a terminal (a background shell ignores SIGINT)

def work():
    with atomic_path(Path(sys.argv[1])) as tmp:
        tmp.write_text("half written")
        print("writing", flush=True)
        time.sleep(120)

sys.exit(run_guarded(work))
"""


@pytest.mark.parametrize(("signum", "status", "line"), [(signal.SIGTERM, 143, "error: terminated"),
                                                       (signal.SIGINT, 130, "error: interrupted")])
def test_a_stopped_write_leaves_no_tmp_file(tmp_path, signum, status, line):
    target = tmp_path / "out.wav"
    child = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "writing\n"
        assert [p.suffix for p in tmp_path.iterdir()] == [".tmp"]  # the write is under way
        child.send_signal(signum)
        _, err = child.communicate(timeout=60)
    finally:
        child.kill()
    assert child.returncode == status and err.splitlines() == [line]
    assert list(tmp_path.iterdir()) == []


def test_sigterm_handler_is_restored_and_an_outer_one_kept():
    runner = signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the default, as a console script starts
    seen = []
    assert run_guarded(lambda: seen.append(signal.getsignal(signal.SIGTERM))) == 0
    assert seen[0] not in (signal.SIG_DFL, None) and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL

    def outer(signum, frame):
        """A handler installed before run_guarded (a service wrapper's): it must stay in place."""

    signal.signal(signal.SIGTERM, outer)
    try:
        assert run_guarded(lambda: seen.append(signal.getsignal(signal.SIGTERM))) == 0
        assert seen[1] is outer and signal.getsignal(signal.SIGTERM) is outer
    finally:
        signal.signal(signal.SIGTERM, runner)
