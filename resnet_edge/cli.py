"""The ``resnet-edge`` console script: each stage contributes its own sub-commands."""

from __future__ import annotations

import typer

from export import cli as export_cli
from runtime import cli as runtime_cli
from runtime import predict_cli, serve_cli
from runtime.lab import cli as lab_cli
from train import cli as train_cli
from train import compress_cli

app = typer.Typer(
    name="resnet-edge",
    help="Train a ResNet on Fashion-MNIST, export verified ONNX/TensorRT artifacts, benchmark and serve them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
train_cli.register(app)
compress_cli.register(app)
export_cli.register(app)
runtime_cli.register(app)
predict_cli.register(app)
serve_cli.register(app)
lab_cli.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
