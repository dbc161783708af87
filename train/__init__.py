"""Training stage: Fashion-MNIST data, the ResNet family, checkpoints and the training loop.

Nothing here imports ``export`` or ``runtime``; the import-linter contract in
``pyproject.toml`` keeps it that way.
"""

__version__ = "0.1.0"
