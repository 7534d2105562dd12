"""The project's own error types. The CLI prints these as one paragraph, without a traceback."""


class EvorError(Exception):
    """A problem the user can fix: bad input, missing data, invalid settings."""


class DataError(EvorError):
    """A dataset file is missing, unreadable or malformed."""


class ConfigError(EvorError):
    """A configuration or command-line setting is invalid."""


class ResumeConflict(EvorError):
    """A run directory holds a run whose saved config differs from the one asked to continue it."""

    def __init__(self, run_dir, differences: list[str], hint: str):
        self.run_dir, self.differences = run_dir, differences
        super().__init__(f"Cannot resume {run_dir}: its config.json differs from the requested config "
                         f"({'; '.join(differences)}). {hint}")
