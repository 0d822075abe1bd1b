"""Hostile ``.zyl`` files: a catalogue of crafted cases and a header mutator, CRCs always valid.

Used by ``tests/test_fuzz_archive.py`` (a bounded run in CI, through the loader
and through every command) and by ``scripts/fuzz_archive.py`` (the long run
whose figures are in SECURITY.md). ``catalogue()`` groups the files by class
(``CLASSES``).
"""

from __future__ import annotations

import copy
import functools
import json
import random
import struct
import zlib

import numpy as np

from zylax import archive
from zylax.containers import Constant
from zylax.containers import Shared
from zylax.containers import Ternary

PLANTED_MODULE = "zylax_planted_model"
"""A module a hostile file names and an attacker plants beside it: importing it writes
``PLANTED_MARKER`` (``planted_module_source``)."""
PLANTED_MARKER = "PLANTED_MODULE_WAS_IMPORTED"


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


def planted_module_source() -> str:
    """The code of ``PLANTED_MODULE``: any import of it leaves ``PLANTED_MARKER`` behind."""
    return (f"open({PLANTED_MARKER!r}, 'w').write('imported')\n"
            "def factory(num_classes=10):\n    raise SystemExit('factory called')\n")


LENET300_SHAPES = {"ip1": (784, 300), "ip2": (300, 100), "ip3": (100, 10)}
FASHION = {"data": "fashion_mnist", "num_classes": 10, "input_shape": [28, 28, 1],
           "preprocess": {"mean": [0.286], "std": [0.353], "pad_to": None},
           "task": {"name": "classification"}}
"""Valid metadata of a Fashion-MNIST classifier (a registered net's or a user's)."""


def lenet300(metadata: dict, extra: dict | None = None, **leaves) -> bytes:
    """A file of LeNet-300-100's variables (zeros: the two large kernels stored as constants,
    a few KB in all) with ``metadata``; ``leaves`` replace some (``{"ip1/bias": array}``),
    ``extra`` adds collections."""
    params = {}
    for layer, (fan_in, fan_out) in LENET300_SHAPES.items():
        kernel = (np.zeros((fan_in, fan_out), np.float32) if layer == "ip3"
                  else Constant(0.0, (fan_in, fan_out), "float32"))
        params[layer] = {"kernel": kernel, "bias": np.zeros(fan_out, np.float32)}
    for name, value in leaves.items():
        layer, key = name.split("/")
        params[layer][key] = value
    return archive.to_bytes({"params": params, **(extra or {})}, metadata=metadata)


def registered_net(net: str, num_classes: int, input_shape: tuple, metadata: dict) -> bytes:
    """A file of the registered ``net``'s every variable, each a zero-byte constant (its
    shapes from ``jax.eval_shape`` of ``init``: nothing computed), with ``metadata``."""
    import jax

    from zylax import registry, train

    model = registry.get(net).factory(num_classes)
    shapes = jax.eval_shape(lambda: train.init_variables(
        model, np.zeros((1, *input_shape), np.float32), 0))
    variables = jax.tree.map(lambda leaf: Constant(0.0, tuple(leaf.shape), str(leaf.dtype)),
                             shapes)
    return archive.to_bytes(variables, metadata=metadata)


def _leaf(name: str, method: str = "constant", **fields) -> dict:
    return {"collection": "params", "name": name, "method": method, "shape": [],
            "dtype": "float32", "value": 0.0, "sections": [], "bytes": [], **fields}


def _header_file(leaves: list, metadata: dict | None = None, padding: int = 0) -> bytes:
    """A file whose header is ``leaves`` and ``metadata``; ``padding`` > 0 adds a raw uint8
    leaf of that many random bytes, so that the file is that much larger."""
    sections = []
    if padding:
        leaves = [*leaves, {"collection": "params", "name": "padding", "method": "raw",
                            "shape": [padding], "dtype": "uint8", "zeros": 0,
                            "sections": [1], "bytes": [padding]}]
        sections = [np.random.default_rng(0).integers(1, 256, padding, np.uint8).tobytes()]
    header = {"format": archive.FORMAT_VERSION, "metadata": metadata or {}, "leaves": leaves}
    return frame([zlib.compress(json.dumps(header).encode(), 9), *sections])


def _raw_payload(values: np.ndarray, name: str = "w") -> bytes:
    """A file with one raw leaf whose bytes are ``values`` (checksums valid, header honest)."""
    header = {"format": archive.FORMAT_VERSION, "metadata": {}, "leaves": [
        {"collection": "params", "name": name, "method": "raw", "shape": list(values.shape),
         "dtype": values.dtype.name, "zeros": 0, "sections": [1],
         "bytes": [values.nbytes]}]}
    return frame([zlib.compress(json.dumps(header).encode()), values.tobytes()])


def _module_cases() -> dict[str, bytes]:
    """Files whose metadata names code to run: stdlib functions and a planted module."""
    return {f"metadata model {spec}": lenet300({**FASHION, "model": spec}) for spec in (
        "os:abort", "http.server:test", "subprocess:getoutput", "builtins:exit",
        f"{PLANTED_MODULE}:factory")} | {
        "metadata net naming a module": lenet300({**FASHION, "net": "os:abort"}),
        "metadata net and model both hostile": lenet300(
            {**FASHION, "net": "no_such_net", "model": f"{PLANTED_MODULE}:factory"})}


def _name_cases() -> dict[str, bytes]:
    many = "/".join(["a"] * 20_000)
    return {
        "name of 20,000 parts": _header_file([_leaf(many)]),
        "name of 65 parts": _header_file([_leaf("/".join(["a"] * 65))]),
        "name of 2,000 bytes": _header_file([_leaf("a" * 2000)]),
        "name with terminal escapes": _header_file([_leaf("w\x1b[2K\x1b[1Gall good\x1b[8m")]),
        "name with a lone surrogate": _header_file([_leaf("w\ud800")]),
        "3,000 leaves of 60-part names (within the bounds)": _header_file(
            [_leaf("/".join([f"p{i}", *["a"] * 59])) for i in range(3000)], padding=1 << 16),
        "6,000 leaves of 60-part names": _header_file(
            [_leaf("/".join([f"p{i}", *["a"] * 59])) for i in range(6000)], padding=1 << 20),
        "16,000 leaves (within the bounds)": _header_file(
            [_leaf(f"w{i}") for i in range(16_000)], padding=1 << 16),
        "20,000 leaves": _header_file([_leaf(f"w{i}") for i in range(20_000)], padding=1 << 16),
        "leaf above another, deep": _header_file(
            [_leaf("/".join(["a"] * 60)), _leaf("/".join(["a"] * 30))]),
    }


def _bloat_cases() -> dict[str, bytes]:
    empties = b"[" + b"{}," * (8 << 20) + b"{}]"
    return {
        "16 MiB of {} in a small file": frame([zlib.compress(empties[:16 << 20], 9)]),
        "300,000 empty objects": _header_file([], {"pad": [{}] * 300_000}),
        "300,000 empty objects in a 1 MiB file": _header_file(
            [], {"pad": [{}] * 300_000}, padding=1 << 20),
        "1,100,000 numbers in a 1 MiB file": _header_file(
            [], {"pad": [0] * 1_100_000}, padding=1 << 20),
        "metadata string of 4 MiB": _header_file([_leaf("w")], {"net": "a" * (4 << 20)}),
        "metadata string of 4 MiB in a 1 MiB file": _header_file(
            [_leaf("w")], {"net": "a" * (4 << 20)}, padding=1 << 20),
        "preprocess mean of 1,000,000 values in a 1 MiB file": _header_file(
            [_leaf("w")], {**FASHION, "net": "lenet300", "preprocess": {
                "mean": [0.5] * 1_000_000, "std": [1.0], "pad_to": None}}, padding=1 << 20),
    }


def _metadata_cases() -> dict[str, bytes]:
    net = {**FASHION, "net": "lenet300"}
    cases = {
        "input shape 65536 x 65536 x 3": {"input_shape": [65536, 65536, 3]},
        "input shape of 64 Mi values": {"input_shape": [2048, 2048, 16]},
        "input shape of rank 5": {"input_shape": [1, 28, 28, 1, 1]},
        "input shape negative": {"input_shape": [-28, 28, 1]},
        "input shape of floats": {"input_shape": [28.0, 28, 1]},
        "pad_to 2**30": {"preprocess": {**FASHION["preprocess"], "pad_to": 1 << 30}},
        "pad_to 4096 for 28x28 images": {"preprocess": {**FASHION["preprocess"],
                                                        "pad_to": 4096}},
        "pad_to smaller than the image": {"preprocess": {**FASHION["preprocess"], "pad_to": 8}},
        "preprocess std zero": {"preprocess": {**FASHION["preprocess"], "std": [0.0]}},
        "preprocess mean NaN": {"preprocess": {**FASHION["preprocess"], "mean": [float("nan")]}},
        "preprocess mean per channel, wrong count": {"preprocess": {
            **FASHION["preprocess"], "mean": [0.1, 0.2, 0.3]}},
        "preprocess a string": {"preprocess": "x / 255"},
        "preprocess mean 10**400": {"preprocess": {**FASHION["preprocess"], "mean": [10 ** 400]}},
        "preprocess std 0 in float32": {"preprocess": {**FASHION["preprocess"], "std": [5e-324]}},
        "preprocess mean inf in float32": {"preprocess": {**FASHION["preprocess"],
                                                          "mean": [1.7e308]}},
        "task segmentation on a classifier": {"task": {"name": "segmentation"}},
        "num_classes 10**9": {"num_classes": 10 ** 9},
        "num_classes a float": {"num_classes": 10.0},
        "task unknown": {"task": {"name": "regression"}},
        "task with extra fields": {"task": {"name": "classification", "code": "os.abort()"}},
        "detection image_size 2**40": {"task": {"name": "detection", "image_size": 1 << 40}},
        "dataset name with a path": {"data": "../../etc/passwd"},
        "net name of 500 characters": {"net": "n" * 500},
    }
    out = {f"metadata {name}": lenet300({**net, **change}) for name, change in cases.items()}
    out["metadata input of 200 x 200 on a dense first layer"] = lenet300(
        {**net, "input_shape": [200, 200, 1]},
        **{"ip1/kernel": Constant(0.0, (200 * 200, LENET300_SHAPES["ip1"][1]), "float32")})
    out["metadata padded input of 2048 x 2048"] = _header_file([_leaf("w")], {
        **FASHION, "net": "lenet300", "input_shape": [1024, 1024, 1],
        "preprocess": {"mean": [0.5], "std": [0.5], "pad_to": 2048}})
    out["metadata segmentation output of 100 labels at 1024 x 1024"] = _header_file(
        [_leaf("w")], {**FASHION, "net": "deeplabv3_mobilenet_v2", "num_classes": 100,
                       "input_shape": [1024, 1024, 1], "task": {"name": "segmentation"}})
    out["metadata num_classes the factory refuses"] = _header_file(
        [_leaf("w")], {**FASHION, "net": "deeplabv3_mobilenet_v2", "num_classes": 1,
                       "input_shape": [96, 96, 1], "task": {"name": "segmentation"}})
    scenes = {**FASHION, "data": "fashion_mnist_scenes", "input_shape": [96, 96, 1]}
    out["metadata segmentation labels other than the model's"] = registered_net(
        "deeplabv3_mobilenet_v2", 1000, (256, 256, 1), {
            **scenes, "net": "deeplabv3_mobilenet_v2", "num_classes": 1000,
            "input_shape": [256, 256, 1], "task": {"name": "segmentation", "num_classes": 2}})
    out["metadata detection of 1800 classes (a huge NMS)"] = registered_net(
        "ssdlite_mobilenet_v2", 1800, (96, 96, 1), {
            **scenes, "net": "ssdlite_mobilenet_v2", "num_classes": 1800,
            "task": {"name": "detection"}})
    out["metadata 100,000 classes scored on Fashion-MNIST"] = lenet300(
        {**net, "num_classes": 100_000},
        **{"ip3/kernel": Constant(0.0, (100, 100_000), "float32"),
           "ip3/bias": Constant(0.0, (100_000,), "float32")})
    out["metadata segmentation inputs padded"] = _header_file([_leaf("w")], {
        **scenes, "net": "deeplabv3_mobilenet_v2", "num_classes": 11,
        "preprocess": {"mean": [0.5], "std": [0.5], "pad_to": 192},
        "task": {"name": "segmentation"}})
    out["metadata terminal escapes in a refused value"] = lenet300(
        {**net, "num_classes": "\x1b]0;owned\x07\x1b[2J"})
    out["metadata input too small for the model"] = _header_file(
        [_leaf("w")], {**FASHION, "net": "lenet5", "input_shape": [1, 1, 1]})
    return out


def _value_cases() -> dict[str, bytes]:
    codebook = np.linspace(-1, 1, 8, dtype=np.float32)
    good = archive.to_bytes({"params": {"w": Shared(codebook, np.arange(4000) % 7)}})
    (first,) = [e["sections"][0] for e in _header(good)["leaves"] if e["method"] == "shared"]
    codebook[7] = np.nan  # an entry no index uses
    return {
        "NaN in a raw leaf": _raw_payload(np.array([1.0, np.nan], np.float32)),
        "Inf in a raw float16 leaf": _raw_payload(np.array([np.inf], np.float16)),
        "Inf in a cast leaf": _cast_inf(),
        "NaN in an unused codebook entry": _replace_section(good, first, codebook.tobytes()),
        "NaN ternary scale": _nan_ternary_scale(),
        "Huffman table of 3 symbols for a 1-weight stream": _huffman_table_of(3),
        "constant 1e308 in float32": _header_file([_leaf("w", value=1e308, shape=[3])]),
        "constant NaN": _header_file([_leaf("w", value=float("nan"))]),
        "constant a string": _header_file([_leaf("w", value="1")]),
        "int32 bias of a float32 model": lenet300(
            {**FASHION, "net": "lenet300"}, **{"ip1/bias": np.zeros(300, np.int32)}),
        "kernel of another shape": lenet300(
            {**FASHION, "net": "lenet300"}, **{"ip2/kernel": np.zeros((3, 3), np.float32)}),
        "batch_stats the model does not have": lenet300(
            {**FASHION, "net": "lenet300"},
            extra={"batch_stats": {"bn": {"mean": np.zeros(3, np.float32)}}}),
    }


def _nan_ternary_scale() -> bytes:
    good = valid_file()
    (scales,) = [e["sections"][0] for e in _header(good)["leaves"] if e["method"] == "ternary"]
    return _replace_section(good, scales, np.array([np.nan, 0.4], np.float32).tobytes())


def _huffman_table_of(symbols: int) -> bytes:
    """A one-weight ternary leaf whose Huffman stream lists ``symbols`` symbols."""
    from zylax.coding import huffman

    codes = huffman.encode(np.arange(symbols) % 3)
    stream = b"\x01" + codes[1:]  # claims one symbol, keeps the table of them all
    header = {"format": archive.FORMAT_VERSION, "metadata": {}, "leaves": [
        {"collection": "params", "name": "w", "method": "ternary", "shape": [1],
         "dtype": "float32", "form": "huffman", "zeros": 0, "sections": [1, 2],
         "bytes": [8, len(stream)]}]}
    return frame([zlib.compress(json.dumps(header).encode()),
                  np.float32([1, 1]).tobytes(), stream])


def _cast_inf() -> bytes:
    header = {"format": archive.FORMAT_VERSION, "metadata": {}, "leaves": [
        {"collection": "params", "name": "w", "method": "cast", "shape": [2],
         "dtype": "float32", "stored": "float16", "sections": [1], "bytes": [4]}]}
    return frame([zlib.compress(json.dumps(header).encode()),
                  np.array([1.0, np.inf], np.float16).tobytes()])


def _empty_ans_layer(columns: int) -> bytes:
    """A shared leaf of shape ``[0, columns]`` in the ans form: no weight, one line a column."""
    from zylax.coding import huffman

    sections = [np.ones(1, np.float32).tobytes(), huffman.encode(np.zeros(0, np.int64)),
                b"\0", b""]
    leaf = {**_leaf("w", "shared", shape=[0, columns], k=1, form="ans", model="rows", kept=0),
            "sections": [1, 2, 3, 4], "bytes": [len(x) for x in sections]}
    header = {"format": archive.FORMAT_VERSION, "metadata": {}, "leaves": [leaf]}
    return frame([zlib.compress(json.dumps(header).encode(), 9), *sections])


def _empty_cases() -> dict[str, bytes]:
    return {
        "zero leaves": _header_file([], FASHION),
        "an ans layer of no weight and 2^27 columns": _empty_ans_layer(1 << 27),
        "no params collection": _header_file([{**_leaf("m"), "collection": "batch_stats"}],
                                             {**FASHION, "net": "lenet300"}),
    }


CLASSES = {"names": _name_cases, "bloat": _bloat_cases, "metadata": _metadata_cases,
           "modules": _module_cases, "values": _value_cases, "empty": _empty_cases}
"""The classes of hostile files beyond the loader's original catalogue, by name."""


def loader_catalogue() -> dict[str, bytes]:
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


@functools.cache
def catalogue() -> dict[str, dict[str, bytes]]:
    """Every crafted file, by class: ``{"loader": {...}, "names": {...}, ...}``.

    A file of the classes ``metadata``, ``modules`` and ``values`` may be a valid
    archive; every command must still refuse it, in one line.
    """
    return {"loader": loader_catalogue(), **{name: make() for name, make in CLASSES.items()}}


_VALUES = [None, True, False, 0, -1, 1, 7, 255, 1 << 31, 1 << 63, 1 << 64, 10 ** 30, 0.5,
           float("nan"), "", "raw", "shared", "float32", "bfloat16", "object", "a/b", [], [0],
           [1 << 40], [[1]], {}, {"a": 1}]


def _value(rng: random.Random):
    return copy.deepcopy(rng.choice(_VALUES))


_METADATA_VALUES = {
    "model": ["os:abort", "http.server:test", f"{PLANTED_MODULE}:factory", "a" * 300],
    "net": ["lenet300", "os:abort", "../x", ""],
    "data": ["fashion_mnist", "mnist", "../../etc/passwd", 7],
    "input_shape": [[28, 28, 1], [65536, 65536, 3], [2048, 2048, 16], [28, 28], [-1, 28, 1],
                    [28, 28, 1, 1], "28x28"],
    "num_classes": [10, 0, -5, 10 ** 9, 10.5, True],
    "preprocess": [{"mean": [0.5], "std": [0.5], "pad_to": None},
                   {"mean": [0.5] * 100, "std": [0.5], "pad_to": None},
                   {"mean": [0.5], "std": [0.0], "pad_to": 32},
                   {"mean": [0.5], "std": [0.5], "pad_to": 1 << 40}, {"mean": 1}],
    "task": [{"name": "classification"}, {"name": "segmentation", "num_classes": 1 << 40},
             {"name": "detection", "image_size": -1}, {"name": "exec"}, ["classification"]],
}
"""Hostile values of the metadata fields zylax reads."""


def _hostile_edit(header: dict, rng: random.Random) -> None:
    """One edit of the classes beyond the loader's catalogue: a name of many parts, bloated or
    hostile metadata, a non-finite or overflowing constant."""
    kind = rng.randrange(4)
    if kind == 0 and header["leaves"]:
        leaf = rng.choice(header["leaves"])
        leaf["name"] = "/".join(["a"] * rng.choice([30, 63, 64, 65, 500]))
    elif kind == 1:
        key = rng.choice(sorted(_METADATA_VALUES))
        header["metadata"][key] = copy.deepcopy(rng.choice(_METADATA_VALUES[key]))
    elif kind == 2:
        header["metadata"]["bloat"] = rng.choice([[{}] * 1000, [0.5] * 5000, "x" * 20000])
    elif header["leaves"]:
        leaf = rng.choice(header["leaves"])
        leaf.update(method="constant", sections=[], bytes=[],
                    value=rng.choice([1e308, -1e39, 0.5, 70000.0]))


def mutate(header: dict, rng: random.Random) -> dict:
    """A copy of ``header`` with one to three values replaced, deleted or added at random paths,
    and, one time in three, one edit of the newer hostile classes (``_hostile_edit``)."""
    header = json.loads(json.dumps(header))
    if rng.random() < 1 / 3:
        _hostile_edit(header, rng)
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


COMMANDS = {
    "inspect": lambda path, out: ["inspect", path],
    "evaluate": lambda path, out: ["evaluate", path],
    "export": lambda path, out: ["export", path, "--out", out + ".tflite"],
    "compress": lambda path, out: ["compress", "--from", path, "--out", out + ".zyl",
                                   "--quiet"],
    "sensitivity": lambda path, out: ["sensitivity", "--from", path, "--out", out + ".json",
                                      "--quiet"],
}
"""Each command's arguments for a hostile file ``path``; outputs go to ``out`` + a suffix."""


def run_command(command: str, folder: str, timeout_s: int = 60) -> dict:
    """Runs ``zylax COMMAND`` in this process on every catalogued file, from ``folder``.

    ``folder`` is the current folder: the planted module lies there, so a command
    that imported what a file names would import it. Returns, per file,
    ``{"class", "code", "stderr", "seconds", "rss_mb"}``: the exit code (0 when
    ``main`` returned), what it wrote to stderr, its time, and its peak RSS above
    the RSS it started from (the kernel's high-water mark, reset before each
    file through ``/proc/self/clear_refs``). The command runs once on a valid
    file first, so compiled code and imports are not counted. A file still
    running after ``timeout_s`` gets code ``"timeout"``; the process ends if
    something it ran killed it.
    """
    import contextlib
    import io
    import os
    import signal
    import time

    from zylax import cli

    os.chdir(folder)
    with open(PLANTED_MODULE + ".py", "w") as f:
        f.write(planted_module_source())

    def run(path: str) -> tuple:
        err = io.StringIO()
        code = 0
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                cli.main(COMMANDS[command](path, os.path.join(folder, "out")))
            except SystemExit as exit_:
                code = exit_.code
        return code, err.getvalue()

    def alarm(signum, frame):
        raise TimeoutError

    signal.signal(signal.SIGALRM, alarm)
    warm = os.path.join(folder, "warm.zyl")
    with open(warm, "wb") as f:
        f.write(valid_file())
    run(warm)
    results = {}
    for cls, files in catalogue().items():
        for name, blob in files.items():
            path = os.path.join(folder, "hostile.zyl")
            with open(path, "wb") as f:
                f.write(blob)
            base = reset_peak_rss()
            t0 = time.perf_counter()
            signal.alarm(timeout_s)
            try:
                code, err = run(path)
            except TimeoutError:
                code, err = "timeout", ""
            finally:
                signal.alarm(0)
            results[name] = {"class": cls, "code": code, "stderr": err,
                             "seconds": time.perf_counter() - t0,
                             "rss_mb": (peak_rss() - base) / 1024}
    return results


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def reset_peak_rss() -> int:
    """Resets this process's peak RSS (Linux ``clear_refs`` 5) to its current RSS; returns it
    in KiB."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status_kb("VmRSS")


def peak_rss() -> int:
    """This process's peak RSS since the last ``reset_peak_rss``, in KiB."""
    return _status_kb("VmHWM")


def memory_case(method: str, form: str, n: int, dtype: str = "float64") -> bytes:
    """A one-leaf file of ``n`` values in ``method``'s ``form``, small on disk (the streams
    of constant symbols Huffman-code to a bit each): how much decoding it takes."""
    from zylax.coding import huffman

    ones, zeros = huffman.encode(np.ones(n, np.int64)), huffman.encode(np.zeros(n, np.int64))
    entry = {"shape": [n], "dtype": dtype}
    if method == "raw":
        entry.update(form="sparse", zeros=0, entries=n, index_bits=2)
        sections = [np.ones(n, dtype).tobytes(), zeros]
    elif method == "shared" and form == "ans":  # all kept but one: a stream of a few words
        from zylax.coding import ans

        mask = np.arange(n) > 0
        entry.update(k=1, form=form, kept=n - 1, model="rows")
        sections = [np.ones(1, dtype).tobytes(),
                    *ans.encode(mask[None], np.zeros(n - 1, np.int64), 1, "rows")]
    elif method == "shared":
        entry.update(k=1, form=form, kept=n, entries=n, index_bits=2)
        sections = [np.ones(1, dtype).tobytes(), zeros, zeros][:3 if form == "sparse" else 2]
    elif method == "ternary":
        entry.update(form=form, zeros=0, entries=n, index_bits=2)
        sections = [np.ones(2, dtype).tobytes(), ones, zeros] if form == "sparse" else \
            [np.ones(2, dtype).tobytes(), huffman.encode(np.full(n, 2, np.int64))]
    else:
        entry.update(per_channel=False)
        sections = [np.ones(1, dtype).tobytes(), b"\xff" * (-(-n // 8))]
    entry.update(collection="params", name="w", method=method,
                 sections=list(range(1, len(sections) + 1)), bytes=[len(x) for x in sections])
    header = {"format": archive.FORMAT_VERSION, "metadata": {}, "leaves": [entry]}
    return frame([zlib.compress(json.dumps(header).encode()), *sections])
