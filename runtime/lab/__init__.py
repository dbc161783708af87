"""The benchmark lab, above the deployed runtime core: ``bench`` (latency sweeps against peers), ``peers`` (what a
user would run instead), ``roofline`` (FLOPs and measured GEMM peaks), ``report`` (tables, JSON, CSV, plots) and
``loadtest`` (a load generator for any KServe v2 server). The core never imports it (an import-linter contract);
it may import heavier tools, each inside the function that needs it."""
