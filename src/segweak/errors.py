"""The one exception type that segweak raises for user-facing problems.

The CLI catches :class:`SegweakError` and prints its message (no traceback), so every message must
name the file, option or key at fault and say what to do about it.
"""


class SegweakError(Exception):
    """A problem with the user's input, data or configuration, explained in one message."""


def short_list(items: list[str], n: int = 3) -> str:
    """Return the first ``n`` items joined by commas, with ``(+k more)`` when there are more.

    For one-line messages that name a few of many offending files or ids.
    """
    shown = ", ".join(items[:n])
    return shown + (f" (+{len(items) - n} more)" if len(items) > n else "")
