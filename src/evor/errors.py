"""The project's own error types. The CLI prints these as one paragraph, without a traceback."""


class EvorError(Exception):
    """A problem the user can fix: bad input, missing data, invalid settings."""


class DataError(EvorError):
    """A dataset file is missing, unreadable or malformed."""


class ConfigError(EvorError):
    """A configuration or command-line setting is invalid."""
