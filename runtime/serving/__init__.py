"""KServe v2 / Triton-compatible HTTP serving (the `serve` extra). Imported only by `resnet-edge serve`."""
