"""Training stage: Fashion-MNIST data, the ResNet family, checkpoints and the training loop.

Nothing here imports ``export`` or ``runtime``; the import-linter contracts in ``pyproject.toml`` keep it so.
"""

from resnet_edge import __version__

__all__ = ["__version__"]
