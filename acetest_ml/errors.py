"""Errors a user can cause. The CLI prints them as one line and exits 2."""


class UserError(Exception):
    """Bad input from the user: unknown API, broken YAML, corrupt model file,
    missing data directory... ``str(err)`` is the one-line message."""


class UnknownApiError(UserError):
    pass


class ConfigError(UserError):
    """A configuration file is malformed; the message names file, key, problem."""


class UnsupportedApiError(UserError):
    """The API exists but we cannot build calls for it (reason in message)."""
