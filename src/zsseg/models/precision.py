"""Which precision "auto" stands for on this machine: what the hardware computes fast.

Kept apart from loading: the loader is given a precision; this module reads the CPU's flags and
the GPU's abilities to choose one.
"""

from __future__ import annotations

import torch

# What "auto" means on a CPU without AMX (`resolve_precision`): int8
# (benchmarks/precision_agreement.py weighs its speed and its agreement with fp32).
AUTO_FALLBACK = "int8"


def cpu_flags() -> set[str]:
    """This CPU's feature flags ("avx2", "amx_bf16", ...) from /proc/cpuinfo; empty where that
    file is missing."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            return next((set(line.split(":", 1)[1].split()) for line in info if line.startswith("flags")), set())
    except OSError:
        return set()


def native_bf16() -> bool:
    """Whether this CPU computes in bf16 natively (AMX or AVX512_BF16, `cpu_flags`) rather than
    emulating it."""
    return bool({"amx_bf16", "avx512_bf16"} & cpu_flags())


def amx_bf16() -> bool:
    """Whether this CPU has AMX's bf16 tiles: the one kind of CPU where bf16 outruns int8 for
    CLIP's matmuls. With AVX512_BF16 alone (AMD Zen 4, Intel Cooper Lake) int8's VNNI products
    are the faster (benchmarks/precision_agreement.py --tower-only measures both)."""
    return "amx_bf16" in cpu_flags()


def resolve_precision(precision: str, device: str | torch.device = "cpu") -> str:
    """The precision "auto" stands for on `device`: bf16 on a GPU that has it and on a CPU with
    AMX (`amx_bf16`), int8 on other CPUs (`AUTO_FALLBACK`), fp32 on a GPU without bf16. Any
    other value is returned as is."""
    if precision != "auto":
        return precision
    device = torch.device(device)
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        return "bf16" if amx_bf16() else AUTO_FALLBACK
    return "fp32"



__all__ = ["AUTO_FALLBACK", "amx_bf16", "cpu_flags", "native_bf16", "resolve_precision"]
