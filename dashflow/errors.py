"""One exception type whose message is the single line a user sees."""


class DashflowError(Exception):
    """A user-facing error: the CLIs print ``error: <message>`` and exit 2, no traceback."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when the message is empty)."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
