"""Hostile ``.zyl`` files: a catalogue of crafted cases and a header mutator, CRCs always valid.

Used by ``tests/test_fuzz_archive.py`` (a bounded run in CI) and by
``scripts/fuzz_archive.py`` (the long run whose figures are in SECURITY.md).
"""

from __future__ import annotations

import copy
import json
import random
import struct
import zlib

import numpy as np

from zylax import archive
from zylax.codecs.shared import Shared
from zylax.codecs.ternary import Ternary


def valid_file() -> bytes:
    """A small real file: shared, ternary and raw leaves, and BatchNorm statistics."""
    rng = np.random.default_rng(0)
    indices = rng.integers(0, 8, (40, 30))
    indices[rng.random((40, 30)) < 0.7] = 8
    codes = rng.integers(-1, 2, (5, 5, 3, 8)).astype(np.int8)
    return archive.to_bytes({
        "params": {"fc": {"kernel": Shared(np.linspace(-1, 1, 8, dtype=np.float32), indices),
                          "bias": np.zeros(30, np.float32)},
                   "conv": {"kernel": Ternary(codes, np.float32(0.5), np.float32(0.4))}},
        "batch_stats": {"bn": {"mean": np.ones(8, np.float32)}}},
        metadata={"net": "x", "data": "fashion_mnist"})


def frame(sections: list[bytes], count: int | None = None, version: int = archive.FORMAT_VERSION
          ) -> bytes:
    """A file from section payloads, every CRC correct (``count`` may lie)."""
    parts = [archive.MAGIC, struct.pack("<HI", version, len(sections) if count is None else count)]
    for section in sections:
        parts += [struct.pack("<Q", len(section)), section, struct.pack("<I", zlib.crc32(section))]
    body = b"".join(parts)
    return body + struct.pack("<I", zlib.crc32(body))


def with_header(blob: bytes, header) -> bytes:
    """``blob`` with its header replaced by ``header`` (JSON-encoded, or bytes as given)."""
    sections = archive._split_sections(blob)
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    return frame([zlib.compress(text), *sections[1:]])


def _header(blob: bytes) -> dict:
    return json.loads(zlib.decompress(archive._split_sections(blob)[0]))


def _edit(blob: bytes, leaf: int, **fields) -> bytes:
    header = _header(blob)
    header["leaves"][leaf].update(fields)
    return with_header(blob, header)


def _replace_section(blob: bytes, index: int, payload: bytes) -> bytes:
    """``blob`` with section ``index`` replaced and the header's size list updated to match."""
    header = _header(blob)
    for entry in header["leaves"]:
        if index in entry["sections"]:
            entry["bytes"][entry["sections"].index(index)] = len(payload)
    sections = archive._split_sections(blob)
    sections[index] = payload
    return with_header(frame(sections), header)


def _zlib_bomb(megabytes: int) -> bytes:
    deflate = zlib.compressobj(9)
    chunk = b"[" * (1 << 20)
    return b"".join(deflate.compress(chunk) for _ in range(megabytes)) + deflate.flush()


def catalogue() -> dict[str, bytes]:
    """Named crafted files; each must be refused with ``CorruptFileError`` in bounded memory."""
    good = valid_file()
    header = _header(good)
    sections = archive._split_sections(good)
    huge_raw = {"format": 2, "metadata": {}, "leaves": [
        {"collection": "params", "name": "w", "method": "raw", "shape": [1 << 31],
         "dtype": "float32", "sections": [1], "bytes": [4]}]}
    cases = {
        "zero sections": frame([], count=0),
        "count larger than the file": frame(sections, count=1 << 31),
        "future format version": frame(sections, version=99),
        "header not zlib": frame([b"not zlib", *sections[1:]]),
        "header not JSON": with_header(good, b"{nope"),
        "header a list": with_header(good, [1, 2]),
        "deeply nested JSON": with_header(good, b"[" * 200000 + b"]" * 200000),
        "nested metadata over the depth bound": with_header(
            good, {**header, "metadata": json.loads("[" * 100 + "]" * 100)}),
        "5000-digit integer": with_header(good, b'{"format": 2, "x": ' + b"9" * 5000 + b"}"),
        "zlib bomb header": frame([_zlib_bomb(200), *sections[1:]]),
        "8 GiB raw leaf in a tiny file": with_header(frame([b"", b"1234"]), huge_raw),
        "no leaves list": with_header(good, {"format": 2, "metadata": {}}),
        "duplicate leaf": with_header(good, {**header, "leaves": header["leaves"]
                                             + header["leaves"][:1]}),
        "leaf inside a leaf": _edit(good, 1, name="fc/kernel/x"),
        "empty name part": _edit(good, 0, name="fc//kernel"),
        "name not a string": _edit(good, 0, name=["fc"]),
        "collection with a slash": _edit(good, 0, collection="a/b"),
        "unknown method": _edit(good, 0, method="evil"),
        "object dtype": _edit(good, 1, dtype="object"),
        "unicode dtype": _edit(good, 1, dtype="<U10"),
        "datetime dtype": _edit(good, 1, dtype="datetime64[s]"),
        "structured dtype": _edit(good, 1, dtype="V100000000"),
        "dtype a number": _edit(good, 1, dtype=7),
        "shape 2**40": _edit(good, 1, shape=[1 << 40]),
        "shape 2**64": _edit(good, 1, shape=[1 << 64]),
        "shape product over 2**64": _edit(good, 1, shape=[1 << 40, 1 << 40]),
        "negative dimension": _edit(good, 1, shape=[-30]),
        "shape a string": _edit(good, 1, shape="30"),
        "boolean dimension": _edit(good, 1, shape=[True]),
        "section out of range": _edit(good, 1, sections=[99]),
        "section zero (the header)": _edit(good, 1, sections=[0]),
        "section used twice": _edit(good, 1, sections=header["leaves"][0]["sections"][:1]),
        "section sizes disagree": _edit(good, 1, bytes=[7]),
        "codebook of 2**40 entries": _edit(good, 0, k=1 << 40),
        "codebook size a float": _edit(good, 0, k=8.0),
        "unknown form": _edit(good, 0, form="other"),
        "kept beyond the layer": _edit(good, 0, kept=10 ** 9),
        "index bits 0": _edit(good, 0, form="sparse", entries=0, index_bits=0),
        "ternary zeros beyond the layer": _edit(good, 2, zeros=10 ** 9),
        "ternary form unknown": _edit(good, 2, form=None),
        "huffman stream claiming 2**60 symbols": _replace_section(good, 2, b"\x80" * 8 + b"\x10"),
        "huffman stream of a wrong length": _replace_section(good, 2, b"\x05\x02\x01\x01"),
    }
    return cases


_VALUES = [None, True, False, 0, -1, 1, 7, 255, 1 << 31, 1 << 63, 1 << 64, 10 ** 30, 0.5,
           float("nan"), "", "raw", "shared", "float32", "bfloat16", "object", "a/b", [], [0],
           [1 << 40], [[1]], {}, {"a": 1}]


def _value(rng: random.Random):
    return copy.deepcopy(rng.choice(_VALUES))


def mutate(header: dict, rng: random.Random) -> dict:
    """A copy of ``header`` with one to three values replaced, deleted or added at random paths."""
    header = json.loads(json.dumps(header))
    for _ in range(rng.randint(1, 3)):
        node, path = header, []
        while isinstance(node, (dict, list)) and node and rng.random() < 0.8:
            key = rng.choice(list(node)) if isinstance(node, dict) else rng.randrange(len(node))
            path.append((node, key))
            node = node[key]
        if not path:
            continue
        parent, key = path[-1]
        action = rng.random()
        if action < 0.15 and isinstance(parent, dict):
            del parent[key]
        elif action < 0.25 and isinstance(parent, dict):
            parent[rng.choice(["k", "form", "extra", "shape", "dtype"])] = _value(rng)
        else:
            parent[key] = _value(rng)
    return header


def mutated_file(blob: bytes, rng: random.Random) -> bytes:
    """``blob`` with a mutated header (valid CRCs)."""
    return with_header(blob, mutate(_header(blob), rng))
