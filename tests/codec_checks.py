"""Checks every codec's test runs: bit-exact round trip through a file, corrupted sections refused."""

import struct
import zlib

import ml_dtypes
import numpy as np
import pytest
from hypothesis import strategies as st

from zylax import archive, codecs

FLOATS = [np.float16, ml_dtypes.bfloat16, np.float32, np.float64]


def float_dtypes():
    """A strategy over the value dtypes a file may hold."""
    return st.sampled_from(FLOATS)


def shapes(max_dims=4, max_side=6):
    """A strategy over small array shapes (scalars and zero-sized axes included)."""
    return st.lists(st.integers(0, max_side), min_size=0, max_size=max_dims).map(tuple)


def finite(rng: np.random.Generator, shape, dtype) -> np.ndarray:
    """Finite values of ``dtype``, spread over a few magnitudes."""
    return (rng.standard_normal(shape) * 10.0 ** rng.integers(-3, 3)).astype(dtype)


def round_trip(leaf, method: str) -> dict:
    """Saves ``{"params": {"layer": {"kernel": leaf}}}`` in memory, checks it decodes exactly.

    Returns the header entry. The stored method must be ``method`` (or raw, which
    the archive may pick when it is smaller, so the test asks for that too).
    """
    blob = archive.to_bytes({"params": {"layer": {"kernel": leaf}}})
    variables, header = archive.decode_bytes(blob)
    got = variables["params"]["layer"]["kernel"]
    want = codecs.dense(leaf)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(np.atleast_1d(got).view(np.uint8),  # bits, not values
                                  np.atleast_1d(want).view(np.uint8))
    (entry,) = header["leaves"]
    assert entry["method"] in (method, "raw")
    raw_bytes = want.size * want.dtype.itemsize
    assert sum(entry["bytes"]) <= raw_bytes or entry["method"] == "raw"
    return entry


def _reframe(blob: bytes, index: int, payload: bytes) -> bytes:
    """The file with section ``index`` replaced and every CRC recomputed (a crafted file)."""
    sections = archive._split_sections(blob)
    sections[index] = payload
    parts = [blob[:len(archive.MAGIC) + 6]]
    for section in sections:
        parts += [struct.pack("<Q", len(section)), section, struct.pack("<I", zlib.crc32(section))]
    body = b"".join(parts)
    return body + struct.pack("<I", zlib.crc32(body))


def refuses_damaged_sections(leaf) -> None:
    """Flipping bytes of each leaf section is refused, whether or not the CRCs are redone."""
    blob = archive.to_bytes({"params": {"w": leaf}})
    header, sections = archive.read_header_bytes(blob)
    for index in header["leaves"][0]["sections"]:
        section = sections[index]
        if not section:
            continue
        damaged = bytearray(blob)
        start = blob.index(section)
        damaged[start] ^= 0xFF
        with pytest.raises(archive.CorruptFileError):
            archive.decode_bytes(bytes(damaged))
        for crafted in (section[:-1], section + b"\0"):
            with pytest.raises(archive.CorruptFileError):
                archive.decode_bytes(_reframe(blob, index, crafted))
