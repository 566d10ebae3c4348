"""One error tree for mnist-edge.

    MnistEdgeError              anything a user can fix; the CLI prints its message in one line
    ├── ConfigError             a setting out of range (0 epochs, negative learning rate, ...)
    ├── DataError               MNIST not found, unreadable, or smaller than asked for
    ├── CheckpointError         checkpoint missing, corrupt, or of another architecture
    ├── ArtifactError           exported model missing, corrupt, or not this model
    ├── InputError              predictor input of the wrong shape, dtype or values
    └── OutputError             an output path that cannot be written

Messages are sentences that say what is wrong and what to do about it.
"""


class MnistEdgeError(Exception):
    """Base class: a problem the user can act on (no traceback needed)."""


class ConfigError(MnistEdgeError, ValueError):
    """A configuration value is out of range."""


class DataError(MnistEdgeError):
    """The MNIST data cannot be found or read."""


class CheckpointError(MnistEdgeError):
    """A training checkpoint cannot be used."""


class ArtifactError(MnistEdgeError):
    """An exported model cannot be used."""


class InputError(MnistEdgeError, ValueError):
    """Input given to the predictor does not fit the model."""


class OutputError(MnistEdgeError):
    """An output file or folder cannot be written."""
