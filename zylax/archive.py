"""The compressed model file (``.zyl``): framing, checksums, atomic writes.

Layout (all integers little-endian)::

    b"ZYLAX\\0" | u16 format version | u32 number of sections |
    sections: u64 length | payload | u32 CRC32(payload)   (section 0: the header) |
    u32 CRC32 of every byte before it

Section 0 is zlib-compressed UTF-8 JSON (sorted keys, no timestamps)::

    {"format": 2, "metadata": {...}, "leaves": [entry, ...]}

with one entry per leaf of every saved collection: ``collection``, ``name``
(the leaf's path inside it, "/"-joined), ``method``, ``shape``, ``dtype``,
the codec's own fields, ``sections`` (indices of its payloads) and ``bytes``
(their sizes). How a method turns a leaf into sections is its codec's
business (``zylax.codecs``: raw, shared, pattern, ternary, binary); this
module only dispatches on the method named in the header.

What is stored: ``save(path, tree)`` takes Flax variables
(``{"params": ..., "batch_stats": ..., ...}``: every collection is kept) or a
params tree alone (stored as ``{"params": tree}``). A leaf is an array
(stored raw) or a codec container (``Shared``, ``Ternary``, ``Binary``,
``Pattern``). Every codec offers one or more encodings; the smallest is
written, and raw when raw is smaller still, so no leaf costs more than its
raw bytes. Same inputs, same bytes.

Loader contract (``load``, ``read_header``):

* the trailing CRC and each section's CRC are checked first;
* the header is decompressed with a bound (``MAX_HEADER_BYTES``, and at most
  ``HEADER_MULTIPLE`` bytes per file byte), its JSON counted before it is
  parsed (``MAX_JSON_CONTAINERS`` objects and arrays, ``MAX_JSON_VALUES``
  values), then checked against a schema before any array is allocated:
  at least one leaf and at most ``MAX_LEAVES``, known
  methods, float dtypes for values, non-negative integer shapes, section
  indices in range and owned by one leaf each, printable names of at most
  ``MAX_NAME_PARTS`` parts and ``MAX_NAME_BYTES`` bytes
  (``MAX_TOTAL_NAME_BYTES`` in all), unique leaf paths
  with no leaf inside another (checked in one pass over the parts), bounded
  JSON depth and integers;
* the memory decoding takes is computed from the header (``decoding_bytes``:
  the decoded arrays and the largest decoder working set) and refused above
  ``max_decoded_bytes`` (default ``min(DECODED_CAP, max(DECODED_FLOOR, DECODED_MULTIPLE x file
  size)``);
* reading a path reads a regular file of at most ``DECODED_CAP`` bytes;
* decoded float values are finite, as ``save`` requires them to be;
* every failure raises ``CorruptFileError`` with one line naming the section
  or leaf; a damaged file never yields parameters.

The metadata is data: this module stores and returns it, and nothing here
or anywhere in zylax imports or calls what it names (``zylax.modelfile``
checks its known fields).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import stat
import struct
import zlib
from typing import Any, Mapping

import numpy as np

from zylax import codecs
from zylax.codecs import _common

MAGIC = b"ZYLAX\0"
FORMAT_VERSION = 2
MAX_HEADER_BYTES = 8 << 20
"""Largest decompressed header accepted."""
HEADER_MULTIPLE = 64
"""Largest decompressed header per byte of the file (files under 64 KiB: 4 MiB)."""
MAX_JSON_CONTAINERS = 1 << 18
"""Most JSON objects and arrays a header may hold."""
MAX_JSON_VALUES = 1 << 20
"""Most JSON values (counted by their separators) a header may hold."""
MAX_LEAVES = 1 << 14
"""Most leaves a file may hold."""
MAX_NAME_PARTS = 64
"""Most "/"-separated parts in a leaf name."""
MAX_NAME_BYTES = 1024
"""Longest leaf name, in UTF-8 bytes."""
MAX_TOTAL_NAME_BYTES = 512 << 10
"""Most bytes in all leaf names together."""
DECODED_MULTIPLE = 1024
"""Default bound on decoded bytes per file byte."""
DECODED_FLOOR = 64 << 20
"""Decoded bytes every file may declare, however small (a tiny, very sparse layer)."""
DECODED_CAP = 8 << 30
"""Default absolute bound on the decoded bytes of one file (raise with ``max_decoded_bytes``)."""
_MAX_JSON_DEPTH = 64


class CorruptFileError(ValueError):
    """A ``.zyl`` file is truncated, damaged, hostile or not a zylax file."""


def _as_collections(tree: Mapping) -> Mapping:
    """Variables stay as they are; a params tree alone becomes ``{"params": tree}``."""
    if not isinstance(tree, Mapping):
        raise ValueError(f"save expects a dict of variables or params, got {type(tree).__name__}")
    if isinstance(tree.get("params"), Mapping):
        return tree
    return {"params": tree}


def _flatten(tree: Mapping, prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for key, value in tree.items():
        key = str(key)
        if not key or "/" in key:
            raise ValueError(f"{prefix}{key!r}: a variable name must be non-empty without '/'")
        if isinstance(value, Mapping):
            out += _flatten(value, f"{prefix}{key}/")
        else:
            out.append((prefix + key, value))
    return out


def _check_finite(path: str, values: np.ndarray) -> None:
    """``ValueError`` naming ``path`` when a float array holds NaN or Inf."""
    try:
        _common.check_finite(values, path)
    except ValueError as err:
        raise ValueError(f"{err}; refusing to save it") from None


def _candidates(path: str, leaf) -> dict:
    """Every encoding of one leaf its codec offers, plus raw."""
    codec = codecs.for_leaf(leaf)
    try:
        values = codec.dense(leaf)
        _check_finite(path, values)
        variants = {key: (codec.METHOD, fields, sections)
                    for key, (fields, sections) in codec.encode(leaf).items()}
        if codec.METHOD != "raw":
            variants.update({key: ("raw", fields, sections) for key, (fields, sections)
                             in codecs.by_method("raw").encode(values).items()})
    except ValueError as err:
        if str(err).startswith(path):
            raise
        raise ValueError(f"{path}: {err}") from None
    return variants


def _cost(variant) -> int:
    """Bytes a variant adds to a file: its sections, their framing and its header fields
    before the header is compressed."""
    method, fields, sections = variant
    return sum(map(len, sections)) + _SECTION_FRAMING * len(sections) + len(json.dumps(fields))


def leaf_bytes(leaf, path: str = "leaf") -> int:
    """Bytes the cheapest encoding of one leaf (an array or a codec container) adds to a file:
    its payload sections, their framing (length and CRC) and its header fields before the
    header is compressed. Differences of these are the differences of file sizes up to the
    header's compression (a few bytes a leaf)."""
    return min(map(_cost, _candidates(path, leaf).values()))


_SECTION_FRAMING = 12
"""Bytes framing each section: its length (8) and its CRC-32 (4)."""


def _family(key: str) -> str:
    return key.partition(":")[0]


def _plans(candidates: list[dict]) -> list[list]:
    """Leaf choices to compare: each leaf's cheapest variant, and one plan per tunable setting.

    Variant keys ``family:value`` (e.g. ``gaps:5``) are alternatives of one
    setting. The plan for ``gaps:5`` lets every leaf choose among its other
    variants and ``gaps:5`` only, which is what a file written with that
    fixed setting gets; the archive keeps the smallest file, so a setting
    tried by ``"auto"`` never beats it. The plans without a family (e.g. without
    ``ans``) are those of a file its setting does not offer, so offering a family never
    makes the file larger. Raw is always a choice.
    """
    families = sorted({_family(k) for c in candidates for k in c if ":" in k})
    plans = _family_plans(candidates)
    for family in families:
        plans += _family_plans([{k: v for k, v in c.items() if _family(k) != family}
                                for c in candidates])
    return list({tuple(map(id, plan)): plan for plan in plans}.values())  # each file once


def _family_plans(candidates: list[dict]) -> list[list]:
    """Each leaf's cheapest variant, and one plan per variant key (``_plans``)."""
    keys = sorted({k for c in candidates for k in c if ":" in k})
    plans = [[min(c.values(), key=_cost) for c in candidates]]
    for key in keys:
        plans.append([min((v for k, v in c.items() if _family(k) != _family(key) or k == key),
                          key=_cost) for c in candidates])
    return plans


def _assemble(leaves: list[tuple[str, str]], plan: list, metadata: dict) -> bytes:
    entries, payloads = [], []
    for (collection, name), (method, fields, sections) in zip(leaves, plan):
        first = len(payloads) + 1
        entries.append({**fields, "collection": collection, "name": name, "method": method,
                        "sections": list(range(first, first + len(sections))),
                        "bytes": [len(s) for s in sections]})
        payloads += sections
    header = {"format": FORMAT_VERSION, "leaves": entries, "metadata": metadata}
    meta = zlib.compress(json.dumps(header, sort_keys=True, separators=(",", ":")).encode(), 9)
    parts = [MAGIC, struct.pack("<HI", FORMAT_VERSION, len(payloads) + 1)]
    for payload in [meta, *payloads]:
        parts += [struct.pack("<Q", len(payload)), payload, struct.pack("<I", zlib.crc32(payload))]
    body = b"".join(parts)
    return body + struct.pack("<I", zlib.crc32(body))


def to_bytes(tree: Mapping, *, metadata: dict | None = None) -> bytes:
    """The complete file contents for ``save`` (see the module docstring)."""
    metadata = dict(metadata or {})
    try:
        json.dumps(metadata)
    except (TypeError, ValueError) as err:
        raise ValueError(f"metadata is not JSON-serialisable: {err}") from None
    leaves, candidates = [], []
    for collection, subtree in _as_collections(tree).items():
        if not isinstance(subtree, Mapping):
            raise ValueError(f"collection {collection!r} is not a dict")
        for name, leaf in _flatten(subtree):
            leaves.append((str(collection), name))
            candidates.append(_candidates(f"{collection}/{name}", leaf))
    if not leaves:
        raise ValueError("nothing to save: the tree holds no leaf")
    files = [_assemble(leaves, plan, metadata) for plan in _plans(candidates)]
    return min(files, key=len)


def save(path: str | os.PathLike, tree: Mapping, *, metadata: dict | None = None) -> int:
    """Writes ``tree`` (variables or params, leaves arrays or codec containers) atomically.

    ``metadata`` is any JSON-serialisable dict (model, data, preprocessing,
    accuracy, ...). Raises ``ValueError`` naming the leaf for a value no codec
    can store (NaN/Inf, non-float values, indices outside their codebook).
    Returns the file size in bytes.
    """
    blob = to_bytes(tree, metadata=metadata)
    write_atomic(path, blob)
    return len(blob)


_TMP_PREFIX = ".zylax-"
_TMP_SUFFIX = ".tmp"


def _stale(name: str) -> bool:
    """A temp file of ours whose writer (the PID in its name) is gone."""
    if not (name.startswith(_TMP_PREFIX) and name.endswith(_TMP_SUFFIX)):
        return False
    pid = name[len(_TMP_PREFIX):].partition("-")[0]
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError):
        return False
    return False


def _remove_stale_temps(folder: str) -> None:
    """Deletes temp files left by killed writes (their process is gone) in ``folder``."""
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        if _stale(name):
            try:
                os.unlink(os.path.join(folder, name))
            except OSError:
                pass


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Writes ``data`` to ``path`` through a temp file in the same folder and a rename.

    A reader sees the old file or the whole new one, never a part; on failure
    the temp file is removed, and temp files of writers that were killed
    (``.zylax-<pid>-*.tmp`` whose process is gone) are removed by the next
    write to the folder. The temp file is created as ``open`` would create it
    (mode 0666, less the umask, applied by the kernel), not with ``mkstemp``'s
    owner-only 0600. An existing ``path`` that is not a regular file (a device,
    a FIFO) is refused, never replaced.
    """
    if os.path.exists(path) and not stat.S_ISREG(os.stat(path).st_mode):
        raise ValueError(f"{os.fspath(path)} exists and is not a regular file; refusing to "
                         "replace it")
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    _remove_stale_temps(folder)
    tmp = os.path.join(folder, f"{_TMP_PREFIX}{os.getpid()}-{secrets.token_hex(8)}{_TMP_SUFFIX}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _split_sections(blob: bytes) -> list[bytes]:
    minimum = len(MAGIC) + 6 + 4
    if len(blob) < minimum or not blob.startswith(MAGIC):
        raise CorruptFileError("not a zylax file (bad magic or too short)")
    body, (crc,) = blob[:-4], struct.unpack("<I", blob[-4:])
    if zlib.crc32(body) != crc:
        raise CorruptFileError("file checksum mismatch: the file is truncated or damaged")
    version, count = struct.unpack_from("<HI", blob, len(MAGIC))
    if version != FORMAT_VERSION:
        raise CorruptFileError(f"unsupported format version {version} (this zylax reads "
                               f"{FORMAT_VERSION})")
    if count < 1 or count > len(body) // 12:
        raise CorruptFileError(f"section count {count} does not fit a {len(blob)}-byte file")
    pos, sections = len(MAGIC) + 6, []
    for i in range(count):
        if pos + 8 > len(body):
            raise CorruptFileError(f"section {i} header runs past the end of the file")
        (length,) = struct.unpack_from("<Q", body, pos)
        end = pos + 8 + length
        if end + 4 > len(body):
            raise CorruptFileError(f"section {i} runs past the end of the file")
        payload = body[pos + 8:end]
        (section_crc,) = struct.unpack_from("<I", body, end)
        if zlib.crc32(payload) != section_crc:
            raise CorruptFileError(f"section {i} checksum mismatch")
        sections.append(payload)
        pos = end + 4
    if pos != len(body):
        raise CorruptFileError("trailing bytes after the last section")
    return sections


def _depth(value, limit: int) -> int:
    stack, deepest = [(value, 1)], 0
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) \
            else ()
        stack += [(child, depth + 1) for child in children]
    return deepest


def header_limit(file_bytes: int) -> int:
    """The largest decompressed header a file of ``file_bytes`` bytes may have."""
    return min(MAX_HEADER_BYTES, max(64 << 10, HEADER_MULTIPLE * file_bytes))


def _count_json(text: bytes) -> None:
    """Refuses a header with more JSON containers or values than the bounds, before parsing."""
    containers = text.count(b"{") + text.count(b"[")
    if containers > MAX_JSON_CONTAINERS:
        raise CorruptFileError(f"header: {containers:,} JSON objects and arrays, over the "
                               f"bound of {MAX_JSON_CONTAINERS:,}")
    values = text.count(b",") + text.count(b":")
    if values > MAX_JSON_VALUES:
        raise CorruptFileError(f"header: {values:,} JSON values, over the bound of "
                               f"{MAX_JSON_VALUES:,}")


def _parse_header(section: bytes, file_bytes: int) -> dict:
    limit = header_limit(file_bytes)
    inflater = zlib.decompressobj()
    try:
        text = inflater.decompress(section, limit)
        if inflater.unconsumed_tail or not inflater.eof:
            raise CorruptFileError(f"header: larger than {limit:,} bytes (the bound for a "
                                   f"{file_bytes:,}-byte file) or truncated")
        _count_json(text)
        header = json.loads(text.decode())
    except CorruptFileError:
        raise
    except (zlib.error, UnicodeDecodeError, ValueError, RecursionError) as err:
        raise CorruptFileError(f"header: unreadable ({type(err).__name__}: "
                               f"{str(err)[:120]})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT_VERSION:
        raise CorruptFileError("header: not a zylax header of this format")
    if _depth(header, _MAX_JSON_DEPTH) > _MAX_JSON_DEPTH:
        raise CorruptFileError(f"header: nested deeper than {_MAX_JSON_DEPTH} levels")
    if not isinstance(header.get("metadata"), dict) or not isinstance(header.get("leaves"), list):
        raise CorruptFileError("header: metadata must be an object and leaves a list")
    if len(header["leaves"]) > MAX_LEAVES:
        raise CorruptFileError(f"header: {len(header['leaves']):,} leaves, over the bound of "
                               f"{MAX_LEAVES:,}")
    return header


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 48


def _check_entry(i: int, entry, section_count: int, owners: dict) -> tuple[str, str]:
    if not isinstance(entry, dict):
        raise CorruptFileError(f"leaf {i}: entry is not an object")
    collection, name = entry.get("collection"), entry.get("name")
    if not (isinstance(collection, str) and isinstance(name, str)):
        raise CorruptFileError(f"leaf {i}: collection and name must be strings")
    if not (collection + name).isprintable():  # no terminal escapes, no lone surrogates
        raise CorruptFileError(f"leaf {i}: name {f'{collection}/{name}'[:80]!r} holds "
                               "characters that are not printable")
    if len(collection.encode()) + len(name.encode()) > MAX_NAME_BYTES or \
            name.count("/") >= MAX_NAME_PARTS:
        raise CorruptFileError(f"leaf {i}: name {f'{collection}/{name}'[:80]!r}... is longer "
                               f"than {MAX_NAME_BYTES} bytes or {MAX_NAME_PARTS} parts")
    if not collection or "/" in collection or any(not part for part in name.split("/")):
        raise CorruptFileError(f"leaf {i}: bad collection or name {collection!r}/{name!r}")
    where = f"{collection}/{name}"[:200]
    method = entry.get("method")
    if not isinstance(method, str) or method not in codecs.CODECS:
        raise CorruptFileError(f"{where}: unknown method {str(method)[:40]!r}")
    shape, sections, sizes = entry.get("shape"), entry.get("sections"), entry.get("bytes")
    if not isinstance(shape, list) or len(shape) > 32 or not all(map(_is_count, shape)):
        raise CorruptFileError(f"{where}: bad shape")
    if not isinstance(sections, list) or not isinstance(sizes, list) or \
            len(sections) != len(sizes) or not all(map(_is_count, sections)):
        raise CorruptFileError(f"{where}: bad section list")
    for s in sections:
        if not 0 < s < section_count or s in owners:
            raise CorruptFileError(f"{where}: section {s} is out of range or already used")
        owners[s] = where
    if not isinstance(entry.get("dtype"), str):
        raise CorruptFileError(f"{where}: bad dtype")
    return collection, name


_LEAF = object()
"""Marks a stored leaf in ``_check_paths``' tree of name parts."""


def _check_paths(paths: list[tuple[str, str]]) -> None:
    """Refuses a leaf stored twice or lying inside another, in one pass over the name parts."""
    total = sum(len(collection) + len(name) for collection, name in paths)
    if total > MAX_TOTAL_NAME_BYTES:
        raise CorruptFileError(f"header: leaf names of {total:,} characters in all, over the "
                               f"bound of {MAX_TOTAL_NAME_BYTES:,}")
    if not paths:
        raise CorruptFileError("header: the file holds no leaf")
    root: dict = {}
    for collection, name in paths:
        full = f"{collection}/{name}"
        node = root.setdefault(collection, {})
        *parents, last = name.split("/")
        for part in parents:
            node = node.setdefault(part, {})
            if node is _LEAF:
                raise CorruptFileError(f"{full[:200]}: lies inside another leaf")
        if last in node:
            problem = "stored twice" if node[last] is _LEAF else "holds other leaves inside it"
            raise CorruptFileError(f"{full[:200]}: {problem}")
        node[last] = _LEAF


def decoding_bytes(leaves: list[dict]) -> int:
    """The peak bytes decoding ``leaves`` takes: every decoded array, and the largest
    working set one leaf's decoder needs on top of it (each codec's ``working_bytes``,
    an upper bound measured per form: int64 indices, gaps and positions)."""
    working = max((codecs.by_method(e["method"]).working_bytes(e) for e in leaves), default=0)
    return decoded_array_bytes(leaves) + working


def decoded_array_bytes(leaves: list[dict]) -> int:
    """The bytes of the arrays decoding ``leaves`` gives (a header's ``"leaves"``)."""
    table = {**_common.FLOAT_DTYPES, **_common.INT_DTYPES}
    return sum(_common.size_of(e["shape"]) * (table[e["dtype"]].itemsize
                                              if e["dtype"] in table else 8) for e in leaves)


def read_header_bytes(blob: bytes, *, max_decoded_bytes: int | None = None) -> tuple[dict, list]:
    """Checks every checksum and the header schema; returns ``(header, sections)``."""
    sections = _split_sections(blob)
    header = _parse_header(sections[0], len(blob))
    owners: dict = {}
    paths = [_check_entry(i, e, len(sections), owners) for i, e in enumerate(header["leaves"])]
    _check_paths(paths)
    for entry in header["leaves"]:  # the codec's own fields, through its report row
        try:
            codecs.by_method(entry["method"]).report_row(entry)
        except (KeyError, TypeError, ValueError, IndexError, OverflowError) as err:
            raise CorruptFileError(f"{entry['collection']}/{entry['name']}"[:200] + ": bad "
                                   f"{entry['method']} fields ({type(err).__name__}: "
                                   f"{str(err)[:80]})") from None
    limit = decoded_limit(len(blob), max_decoded_bytes)
    total = decoding_bytes(header["leaves"])
    if total > limit:
        raise CorruptFileError(f"header: declares {total:,} decoded bytes, over the limit of "
                               f"{limit:,} (raise it with max_decoded_bytes=, or "
                               "--max-decoded-bytes)")
    return header, sections


def decoded_limit(file_bytes: int, max_decoded_bytes: int | None = None, *,
                  floor: int = DECODED_FLOOR, multiple: int = DECODED_MULTIPLE) -> int:
    """The decoded-size bound for a file: ``max_decoded_bytes``, else
    ``min(DECODED_CAP, max(floor, multiple x file_bytes))``."""
    if max_decoded_bytes is not None:
        return int(max_decoded_bytes)
    return min(DECODED_CAP, max(floor, multiple * file_bytes))


def _read(path: str | os.PathLike, max_decoded_bytes: int | None) -> bytes:
    """The bytes of a regular file no larger than the decoded-size cap.

    The path is checked before it is opened (opening a FIFO would wait for a
    writer), and opened without blocking in case it changed in between.
    """
    limit = decoded_limit(DECODED_CAP, max_decoded_bytes)
    if not stat.S_ISREG(os.stat(path).st_mode):
        kind = "a directory" if os.path.isdir(path) else "a device, FIFO or socket"
        raise CorruptFileError(f"{path} is not a regular file ({kind})")
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise CorruptFileError(f"{path} is not a regular file")
        if info.st_size > limit:
            raise CorruptFileError(f"{path}: {info.st_size:,} bytes, over the limit of {limit:,}")
        blob = f.read(info.st_size + 1)  # a buffer the file's size, not the cap's
    if len(blob) > info.st_size:
        raise CorruptFileError(f"{path}: grew while it was read")
    return blob


def _nest(flat: list[tuple[str, str, np.ndarray]]) -> dict:
    tree: dict = {}
    for collection, name, value in flat:
        node = tree.setdefault(collection, {})
        *parents, leaf = name.split("/")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def decode_bytes(blob: bytes, *, max_decoded_bytes: int | None = None) -> tuple[dict, dict]:
    """``(variables, header)`` from a file's bytes. Raises ``CorruptFileError`` only."""
    header, sections = read_header_bytes(blob, max_decoded_bytes=max_decoded_bytes)
    flat = []
    for entry in header["leaves"]:
        where = f"{entry['collection']}/{entry['name']}"[:200]
        codec = codecs.by_method(entry["method"])
        try:
            own = [sections[i] for i in entry["sections"]]
            if [len(s) for s in own] != entry["bytes"]:
                raise ValueError("section sizes disagree with the header")
            value = codec.decode(entry, own)
            if value.shape != tuple(entry["shape"]):
                raise ValueError(f"decoded shape {value.shape} differs from {entry['shape']}")
        except (ValueError, KeyError, TypeError, IndexError, OverflowError, MemoryError) as err:
            raise CorruptFileError(f"{where}: {type(err).__name__}: {str(err)[:160]}") from None
        try:
            _common.check_finite(value, where)
        except ValueError as err:
            raise CorruptFileError(f"{err}, which save refuses") from None
        except MemoryError:
            raise CorruptFileError(f"{where}: out of memory checking its values") from None
        flat.append((entry["collection"], entry["name"], value))
    return _nest(flat), header


def load(path: str | os.PathLike, *, max_decoded_bytes: int | None = None) -> tuple[dict, dict]:
    """Reads a ``.zyl`` file; returns ``(variables, metadata)``.

    ``variables`` holds every saved collection (``{"params": ...,
    "batch_stats": ...}``) as nested dicts of NumPy arrays, ready for
    ``model.apply``; ``metadata`` is the dict given to ``save``. Raises
    ``CorruptFileError`` for anything wrong with the file (``FileNotFoundError``
    when there is none).
    """
    variables, header = load_with_header(path, max_decoded_bytes=max_decoded_bytes)
    return variables, header["metadata"]


def load_with_header(path: str | os.PathLike, *, max_decoded_bytes: int | None = None
                     ) -> tuple[dict, dict]:
    """``load`` reading the file once for both: ``(variables, header)``, the header holding
    the per-leaf entries (``header["leaves"]``) and the metadata (``header["metadata"]``)."""
    blob = _read(path, max_decoded_bytes)
    with _naming(path):
        return decode_bytes(blob, max_decoded_bytes=max_decoded_bytes)


def read_header(path: str | os.PathLike, *, max_decoded_bytes: int | None = None) -> dict:
    """The validated header of a ``.zyl`` file (per-leaf entries and metadata), nothing decoded."""
    blob = _read(path, max_decoded_bytes)
    with _naming(path):
        header, _ = read_header_bytes(blob, max_decoded_bytes=max_decoded_bytes)
    return header


@contextlib.contextmanager
def _naming(path):
    """Prefixes a ``CorruptFileError`` raised inside with the file's path."""
    try:
        yield
    except CorruptFileError as err:
        raise CorruptFileError(f"{os.fspath(path)}: {err}") from None
