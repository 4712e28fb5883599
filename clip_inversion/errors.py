"""The error a user can fix: bad input or settings. The CLI prints its message on one line and exits 2."""


class UsageError(ValueError):
    """Bad input or settings; the message names the input and the option that fixes it."""
