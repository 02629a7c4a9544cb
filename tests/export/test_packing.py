"""Bit packing: exact round trips, the documented byte layout, and clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from coarsegrad.errors import ConfigError, DataError
from coarsegrad.export import pack_codes, packed_size, packed_width, unpack_codes


def test_widths():
    assert [packed_width(b) for b in range(1, 9)] == [1, 2, 4, 4, 8, 8, 8, 8]
    with pytest.raises(ConfigError):
        packed_width(0)


@pytest.mark.parametrize("bits", range(1, 9))
def test_round_trip_exhaustive_lengths(bits):
    rng = np.random.default_rng(bits)
    width = packed_width(bits)
    for count in list(range(0, 67)) + [1001, 4097, 65537]:
        codes = rng.integers(0, 1 << bits, size=count, dtype=np.uint8)
        packed = pack_codes(codes, bits)
        assert packed.dtype == np.uint8 and packed.shape == (-(-count * width // 8),)
        assert packed.size == packed_size(count, bits)
        assert np.array_equal(unpack_codes(packed, bits, count), codes)


@pytest.mark.parametrize("bits", range(1, 9))
def test_every_code_value_in_every_slot(bits):
    per_byte = 8 // packed_width(bits)
    values = np.arange(1 << bits)
    for slot in range(per_byte):  # value v at position `slot` of a byte, zeros around it
        codes = np.zeros((len(values), per_byte), dtype=np.int64)
        codes[:, slot] = values
        packed = pack_codes(codes, bits)
        assert np.array_equal(packed, (values << (slot * packed_width(bits))).astype(np.uint8))
        assert np.array_equal(unpack_codes(packed, bits, codes.size), codes.reshape(-1))


def test_layout_is_least_significant_first():
    assert pack_codes(np.array([1, 2, 3, 0]), 2).tolist() == [0b00111001]
    assert pack_codes(np.array([1, 0, 1, 1, 0, 0, 0, 1, 1]), 1).tolist() == [0b10001101, 0b1]
    assert pack_codes(np.array([0xA, 0x5, 0x7]), 4).tolist() == [0x5A, 0x07]
    assert pack_codes(np.array([5, 6, 7]), 3).tolist() == [0x65, 0x07]  # 3 bits use 4-bit slots


def test_shape_is_flattened_in_c_order():
    codes = np.arange(12).reshape(3, 4) % 4
    assert np.array_equal(unpack_codes(pack_codes(codes, 2), 2, 12), codes.reshape(-1))


def test_memory_ratio_vs_float32():
    n = 10000 * 512
    assert packed_size(n, 2) * 16 == n * 4  # 2-bit codes: 16× smaller than float32


def test_errors():
    with pytest.raises(DataError, match="0..3"):
        pack_codes(np.array([0, 4]), 2)
    with pytest.raises(DataError, match="0..3"):
        pack_codes(np.array([-1, 0]), 2)
    with pytest.raises(DataError, match="integer"):
        pack_codes(np.array([0.0, 1.0]), 2)
    with pytest.raises(DataError, match="do not hold"):
        unpack_codes(np.zeros(3, np.uint8), 2, 13)
    with pytest.raises(DataError, match="uint8"):
        unpack_codes(np.zeros(3, np.int16), 2, 12)
    with pytest.raises(DataError, match="count"):
        unpack_codes(np.zeros(3, np.uint8), 2, -1)
    with pytest.raises(DataError, match="above 7"):
        unpack_codes(np.array([0xF0], np.uint8), 3, 2)  # a 4-bit slot holding 15 > 7
