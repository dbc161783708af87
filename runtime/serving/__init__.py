"""KServe v2 / Triton-compatible serving over HTTP and gRPC (in the runtime's own install). Imported only by
`resnet-edge serve`."""
