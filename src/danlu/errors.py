"""The root of every error that is the user's input, not a bug: the CLI prints
it as one line and exits 2, where anything else is a traceback worth reporting."""


class UserError(Exception):
    """Bad input, config or arguments, described in one line."""


class UsageError(UserError):
    """Bad input or arguments: printed as one line, exit status 2."""


class InputError(UserError):
    """An input file cannot be used at all. str() is the one-line message,
    naming the file."""

    def __init__(self, path, message: str):
        super().__init__(f"{path}: {message}")
