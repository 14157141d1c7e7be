"""One exception type whose message is the single line a user sees, and a guard that keeps C
libraries' own notes (mpg123's "Illegal Audio-MPEG-Header ...") off the terminal."""

import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class DashflowError(Exception):
    """A user-facing error: the CLIs print ``error: <message>`` and exit 2, no traceback."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when the message is empty)."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


_quiet_lock = threading.Lock()
_quiet_depth = 0
_saved_stderr: int | None = None


@contextmanager
def quiet_stderr() -> Iterator[None]:
    """Point file descriptor 2 at /dev/null inside the block, for C libraries that print there.

    Wrap only the library call and raise after the block, so Python's own message still shows.
    Thread-safe: the first thread in redirects, the last one out restores.
    """
    global _quiet_depth, _saved_stderr
    with _quiet_lock:
        if _quiet_depth == 0:
            sys.stderr.flush()
            _saved_stderr = os.dup(2)
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 2)
            os.close(null)
        _quiet_depth += 1
    try:
        yield
    finally:
        with _quiet_lock:
            _quiet_depth -= 1
            if _quiet_depth == 0:
                os.dup2(_saved_stderr, 2)
                os.close(_saved_stderr)
