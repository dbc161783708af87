"""resnet-edge: train, export and serve a ResNet image classifier. This package only wires the CLI."""

from train import __version__

__all__ = ["__version__"]
