"""One exception type whose message is the single line a user sees."""


class DashflowError(Exception):
    """A user-facing error: the CLIs print ``error: <message>`` and exit 2, no traceback."""
