"""What the CPU computes natively, for the variants a backend offers (torch-free)."""

from __future__ import annotations


def cpu_has_bf16() -> bool:
    """Native bf16 on this CPU: oneDNN's own answer where torch is installed, else the CPU's flags."""
    from runtime import reference

    if reference.torch_installed():
        from runtime.backends.torch_backend import onednn_bf16

        return onednn_bf16()
    try:
        with open("/proc/cpuinfo") as fh:
            flags = next((line.split(":", 1)[1].split() for line in fh if line.startswith("flags")), [])
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags
