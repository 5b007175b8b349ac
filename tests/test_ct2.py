"""The CTranslate2 reader on a hand-written file: every dtype, a scale, an alias, and broken files."""

import struct

import numpy as np
import pytest

from pipeline.models.ct2 import dequantized, read_ct2


def _string(s: str) -> bytes:
    raw = s.encode() + b"\0"
    return struct.pack("<H", len(raw)) + raw


def _variable(name: str, array: np.ndarray, code: int, raw: bytes | None = None) -> bytes:
    raw = array.tobytes() if raw is None else raw
    dims = b"".join(struct.pack("<I", d) for d in array.shape)
    return _string(name) + struct.pack("<B", array.ndim) + dims + struct.pack("<BI", code, len(raw)) + raw


def _bf16_bits(values: np.ndarray) -> bytes:
    return (values.astype(np.float32).view(np.uint32) >> 16).astype("<u2").tobytes()


@pytest.fixture
def variables():
    rng = np.random.default_rng(0)
    return {
        "f32": rng.normal(size=(3, 4)).astype(np.float32),
        "q/weight": rng.integers(-127, 127, size=(2, 5)).astype(np.int8),
        "q/weight_scale": np.array([2.0, 4.0], np.float32),
        "i16": np.array([-3, 7], np.int16),
        "i32": np.array([[1, -2], [3, 4]], np.int32),
        "f16": rng.normal(size=(5,)).astype(np.float16),
        "bf16": np.array([1.0, -2.5, 0.15625], np.float32),  # exactly representable in bfloat16
        "scalar": np.array(6, np.int16),
    }


def _write(path, variables, version=6, trailing=b""):
    codes = {np.float32: 0, np.int8: 1, np.int16: 2, np.int32: 3, np.float16: 4}
    body = b""
    for name, value in variables.items():
        if name == "bf16":
            body += _variable(name, value, 5, _bf16_bits(value))
        else:
            body += _variable(name, value, codes[value.dtype.type])
    blob = struct.pack("<I", version) + _string("TestSpec") + struct.pack("<I", 3) + struct.pack("<I", len(variables))
    blob += body + struct.pack("<I", 1) + _string("alias/f32") + _string("f32") + trailing
    path.write_bytes(blob)


def test_round_trip_every_dtype_and_alias(tmp_path, variables):
    _write(tmp_path / "model.bin", variables)
    parsed = read_ct2(tmp_path)  # a folder works as well as the file
    assert (parsed.version, parsed.spec, parsed.revision) == (6, "TestSpec", 3)
    assert parsed.aliases == {"alias/f32": "f32"}
    for name, value in variables.items():
        got = parsed.variables[name]
        assert got.shape == value.shape, name
        assert np.array_equal(got, value), name
        expected_dtype = np.float32 if name == "bf16" else value.dtype
        assert got.dtype == expected_dtype, name
    assert np.array_equal(parsed.variables["alias/f32"], variables["f32"])


def test_dequantized_divides_int8_by_row_scale(tmp_path, variables):
    _write(tmp_path / "model.bin", variables)
    weights = dequantized(read_ct2(tmp_path / "model.bin").variables)
    expected = variables["q/weight"].astype(np.float32) / variables["q/weight_scale"][:, None]
    assert np.array_equal(weights["q/weight"], expected)
    assert "q/weight_scale" not in weights
    assert weights["f16"].dtype == np.float32 and np.array_equal(weights["f16"], variables["f16"].astype(np.float32))


def test_broken_files_name_the_file_and_the_fault(tmp_path, variables):
    path = tmp_path / "model.bin"
    _write(path, variables)
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(ValueError, match="truncated"):
        read_ct2(path)
    _write(path, variables, version=2)
    with pytest.raises(ValueError, match="version 2"):
        read_ct2(path)
    _write(path, variables, trailing=b"xx")
    with pytest.raises(ValueError, match="trailing"):
        read_ct2(path)
    with pytest.raises(FileNotFoundError, match="no CTranslate2 model.bin"):
        read_ct2(tmp_path / "nowhere")
