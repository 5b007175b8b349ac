"""Bits that do not depend on the CPU's instruction set: the numeric libraries' SIMD code paths pinned to AVX2.

Why: torch (its own kernels and oneDNN's), numpy and OpenBLAS each pick their kernels by the CPU they run on,
and the AVX-512 kernels round differently in the last bits from the AVX2 ones. Measured on the demo's clips:
Whisper tiny.en's activations differ bit for bit between the two (oneDNN's convolutions, ATen's kernels), and
so do aisfx's clip embeddings (oneDNN, numpy, OpenBLAS); an SAE trained on activations that differ in their
last bits ranks another top 60, so the demo's Table 1 read two ways on two kinds of 2-core machine
(docs/evaluation-history.md). Pinned, a machine with AVX-512 computes what one with AVX2 alone computes. Not
pinned by any variable: kernels that block their loops by the CPU's cache sizes (oneDNN's, MKL's) may still sum
in another order on another CPU model. The SAE's training itself gave the same bits on either path, and with
2 to 16 threads (1 thread differs).

The libraries read these variables once, when they load (numpy, OpenBLAS) or first compute (torch, oneDNN,
MKL): `pin_cpu_paths` runs when the `pipeline` package is first imported, before numpy or torch is, in `ard`,
the explorer and the tests. A variable already set is left as it is; ARD_NATIVE_CPU=1 pins nothing (faster
on AVX-512 machines: benchmarks/cpu_paths.py; the figures then depend on the machine).
"""

from __future__ import annotations

import os
import platform

# numpy names its AVX-512 dispatch targets X86_V4 / AVX512_ICL / AVX512_SPR from 2.4 on, AVX512F ... before; it
# ignores the names it does not know
_NUMPY_AVX512 = "X86_V4 AVX512_ICL AVX512_SPR AVX512F AVX512CD AVX512_KNL AVX512_KNM AVX512_SKX AVX512_CLX AVX512_CNL"

PINS = {
    "ATEN_CPU_CAPABILITY": "avx2",  # torch's own vectorised kernels
    "ONEDNN_MAX_CPU_ISA": "AVX2",  # oneDNN: convolutions, some matrix products
    "MKL_CBWR": "AVX2",  # MKL's matrix products (Intel CPUs; on AMD it takes its AVX2 path already)
    "NPY_DISABLE_CPU_FEATURES": _NUMPY_AVX512,  # numpy's ufunc loops
    "OPENBLAS_CORETYPE": "Haswell",  # numpy's and scipy's OpenBLAS: the AVX2 kernels
}


def pin_cpu_paths(environ=os.environ, machine: str | None = None) -> dict[str, str]:
    """Set each of PINS that is not set already, on x86-64 unless ARD_NATIVE_CPU=1; returns what it set."""
    machine = (machine or platform.machine()).lower()
    if environ.get("ARD_NATIVE_CPU", "") not in ("", "0") or machine not in ("x86_64", "amd64"):
        return {}
    set_here = {name: value for name, value in PINS.items() if name not in environ}
    environ.update(set_here)
    return set_here


def pinned_env(environ=os.environ) -> dict[str, str]:
    """The pins (and the opt-out) as this process has them: for worker processes started on other machines
    (Ray's runtime_env), which do not inherit this process's environment."""
    return {name: environ[name] for name in (*PINS, "ARD_NATIVE_CPU") if name in environ}


def cpu_paths() -> str:
    """Which code paths this process computes on, for a report: "torch AVX2, numpy AVX2 or less (pinned)";
    "partly pinned" where the user set a pin's variable otherwise, "native" where none is set."""
    import torch
    from numpy._core._multiarray_umath import __cpu_features__ as features

    numpy_path = "AVX512" if features.get("X86_V4") or features.get("AVX512_SKX") else "AVX2 or less"
    if all(os.environ.get(name) == value for name, value in PINS.items()):
        how = "pinned"
    else:
        how = "partly pinned" if any(name in os.environ for name in PINS) else "native"
    return f"torch {torch.backends.cpu.get_cpu_capability()}, numpy {numpy_path} ({how})"
