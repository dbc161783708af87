"""resnet-edge: train, export and serve a ResNet image classifier.

This package is the bottom and the top of the house at once, in separate modules: the shared helpers every
stage uses (``errors``, ``atomic``, ``cli_util``, ``images``), which import no stage, and the console script
(``cli``), which wires every stage's sub-commands. The import-linter contracts in ``pyproject.toml`` say so.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
