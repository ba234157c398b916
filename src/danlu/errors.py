"""The root of every error that is the user's input, not a bug: the CLI prints
it as one line and exits 2, where anything else is a traceback worth reporting."""


class UserError(Exception):
    """Bad input, config or arguments, described in one line."""


class UsageError(UserError):
    """Bad input or arguments: printed as one line, exit status 2."""
