"""Errors that main.py reports as one line, without a traceback."""


class LannuError(Exception):
    """Bad user input: the message names the file, sample or key and says what to do."""


class ConfigError(LannuError):
    """A config file or key that cannot be used."""


class DataError(LannuError):
    """A dataset JSON, image or annotation that cannot be used."""


class CheckpointError(LannuError):
    """A checkpoint that is missing, corrupt or does not fit the configuration."""


class TrainingError(LannuError):
    """Training cannot go on (e.g. the loss became NaN)."""
