"""The one exception type that segweak raises for user-facing problems.

The CLI catches :class:`SegweakError` and prints its message (no traceback), so every message must
name the file, option or key at fault and say what to do about it.
"""


class SegweakError(Exception):
    """A problem with the user's input, data or configuration, explained in one message."""
