"""One exception type per kind of failure.

The CLI turns any ``ToolkitError`` into one red line on stderr and exit code 2;
the server (later) maps them to HTTP statuses. Messages are whole sentences.
"""


class ToolkitError(Exception):
    """Base class of every error a user is meant to read."""

    exit_code = 2


class InvalidInput(ToolkitError):
    """An argument, option or request that cannot be honoured."""


class DataError(ToolkitError):
    """The dataset is missing, truncated or not in IDX format."""


class CheckpointError(ToolkitError):
    """A checkpoint file is missing, corrupt, unsafe or of the wrong architecture."""


class ArtifactMismatch(ToolkitError):
    """An artifact does not match what its manifest or the reference model says."""


class AccuracyRegression(ToolkitError):
    """An exported variant lost more accuracy than its precision allows."""


class MissingDependency(ToolkitError):
    """An optional extra is needed for this feature and is not installed."""
