"""The offline pipeline (`ard`). Importing it first pins the numeric libraries' CPU code paths, so that every
x86-64 machine computes the same bits (pipeline/cpu_paths.py)."""

from .cpu_paths import pin_cpu_paths

pin_cpu_paths()
