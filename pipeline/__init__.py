"""The offline pipeline (`ard`). Importing it first pins the numeric libraries' CPU code paths to AVX2, so that
the CPU's instruction set does not decide the bits (pipeline/cpu_paths.py)."""

from .cpu_paths import pin_cpu_paths

pin_cpu_paths()
