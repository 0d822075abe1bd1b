"""The compressed model file (``.zyl``): framed, checksummed, deterministic.

Layout (all integers little-endian)::

    b"ZYLAX\\0" | u16 format version | u32 number of sections |
    sections: u64 length | payload | u32 CRC32(payload)   (section 0: JSON metadata) |
    u32 CRC32 of every byte before it

Section 0 is zlib-compressed UTF-8 JSON (sorted keys, no timestamps): format version, user
metadata and one entry per parameter leaf (name, shape, dtype, method, bits,
index bits, counts, the sections it owns and their sizes). Methods:

* ``sparse_shared`` (Deep Compression): codebook (float32, ``2**bits``), the
  Huffman-coded weight-index stream and the Huffman-coded gap stream of
  ``zylax.transforms.sparse`` (fillers use symbol ``2**bits``).
* ``shared``: codebook and the Huffman-coded dense index stream (used when it is
  smaller than the sparse form, e.g. for an unpruned layer).
* ``pattern`` (SEP-Net pattern binarization): per-output-filter scales
  (float32) and the sign pattern packed 1 bit per weight
  (``packing.pack_binary``); decodes to ``scale * sign``.
* ``raw``: the array's bytes (biases, BatchNorm).

Entries carry a ``collection``: ``"params"`` or ``"batch_stats"`` (BatchNorm
running statistics, stored raw so a BN net decodes to everything
``model.apply`` needs).

``save`` writes to a temporary file in the target folder and renames it
(atomic). ``load`` checks the trailing CRC, every section CRC and every
structural field before building any array; a damaged file raises
``CorruptFileError`` and never yields parameters. Same inputs, same bytes.
"""

from __future__ import annotations

import json
import os
import secrets
import struct
import zlib
from typing import Any

import numpy as np

from zylax.transforms import huffman, packing, sparse
from zylax.transforms import tree as ztree

MAGIC = b"ZYLAX\0"
FORMAT_VERSION = 1
COLLECTIONS = ("params", "batch_stats")
DEFAULT_INDEX_BITS = {"conv": 8, "dense": 5}


class CorruptFileError(ValueError):
    """A ``.zyl`` file is truncated, damaged or not a zylax file."""


AUTO_INDEX_BITS = range(2, 13)
"""Gap widths tried by ``index_bits="auto"``, which keeps the smallest coded layer."""


def _index_bits_for(name: str, shape, index_bits) -> int | str:
    if index_bits == "auto":
        return "auto"
    if isinstance(index_bits, dict):
        default = DEFAULT_INDEX_BITS["conv"] if len(shape) == 4 else DEFAULT_INDEX_BITS["dense"]
        return sparse.check_index_bits(name, ztree.per_leaf_value(name, default, index_bits))
    if index_bits is None:
        return DEFAULT_INDEX_BITS["conv"] if len(shape) == 4 else DEFAULT_INDEX_BITS["dense"]
    return sparse.check_index_bits(name, index_bits)


def _encode_shared(name: str, codebook: np.ndarray, indices: np.ndarray, mask: np.ndarray,
                   index_bits: int | str) -> tuple[dict, list[bytes]]:
    """The smaller of the sparse (gaps) and dense index encodings of one shared layer.

    ``index_bits="auto"`` encodes with every width in ``AUTO_INDEX_BITS`` and
    keeps the smallest.
    """
    if index_bits == "auto":
        candidates = [_encode_shared(name, codebook, indices, mask, b) for b in AUTO_INDEX_BITS]
        return min(candidates, key=lambda c: sum(map(len, c[1])))
    k = codebook.shape[0]
    bits = int(np.log2(k))
    flat_mask = mask.ravel()
    positions = np.flatnonzero(flat_mask)
    gaps, symbols = sparse.to_relative(positions, indices.ravel()[positions], index_bits, k)
    codebook_bytes = codebook.astype("<f4").tobytes()
    weights_blob, gaps_blob = huffman.encode(symbols), huffman.encode(gaps)
    entry = {"method": "sparse_shared", "bits": bits, "index_bits": index_bits,
             "kept": int(positions.size), "entries": int(symbols.size),
             "fillers": int(symbols.size - positions.size),
             "bytes": {"codebook": len(codebook_bytes), "weights": len(weights_blob),
                       "gaps": len(gaps_blob)}}
    sections = [codebook_bytes, weights_blob, gaps_blob]
    if flat_mask.all():
        dense_blob = huffman.encode(indices.ravel())
        if len(dense_blob) < len(weights_blob) + len(gaps_blob):
            entry = {"method": "shared", "bits": bits, "kept": int(flat_mask.size),
                     "bytes": {"codebook": len(codebook_bytes), "weights": len(dense_blob)}}
            sections = [codebook_bytes, dense_blob]
    return entry, sections


def _encode_raw(leaf: np.ndarray) -> tuple[dict, list[bytes]]:
    raw = np.ascontiguousarray(leaf).astype(leaf.dtype.newbyteorder("<")).tobytes()
    return {"method": "raw", "shape": list(leaf.shape), "dtype": str(leaf.dtype),
            "bytes": {"raw": len(raw)}}, [raw]


def _encode_pattern(name: str, scale: np.ndarray, signs) -> tuple[dict, list[bytes]]:
    """A pattern-binarized kernel: ``scale`` (out,) float32 and 1-bit signs (kh, kw, in, out)."""
    signs = np.asarray(signs)
    if scale.shape != signs.shape[-1:]:
        raise ValueError(f"{name}: pattern scale shape {scale.shape} does not match the "
                         f"kernel's output channels {signs.shape[-1:]}")
    scale_bytes = scale.astype("<f4").tobytes()
    bits = packing.pack_binary(signs).tobytes()
    return {"method": "pattern", "shape": list(signs.shape), "dtype": str(scale.dtype),
            "bits": 1, "kept": int(signs.size),
            "bytes": {"codebook": len(scale_bytes), "weights": len(bits)}}, [scale_bytes, bits]


def encode_leaves(latent, aux=None, *, index_bits=None, patterns=None,
                  batch_stats=None) -> tuple[list[dict], list[bytes]]:
    """Per-leaf metadata entries and section payloads for a (possibly compressed) model.

    Args:
      latent: params, with each shared leaf replaced by its codebook (``sharing.share``)
        and each pattern-binarized kernel by its scales (``pattern.binarize_patterns``).
      aux: ``{name: {"indices"}}`` of the shared leaves (``sharing.share``), or None.
      index_bits: int, ``{regex: bits}``, ``"auto"`` (smallest file) or None
        (Han: 8 for conv, 5 for dense).
      patterns: ``{name: int8 +1/-1 kernel}`` of the pattern-binarized leaves, or None.
      batch_stats: the model's BatchNorm statistics (stored raw), or None.
    """
    aux, patterns = aux or {}, patterns or {}
    entries, sections = [], []
    ztree.check_finite(latent)
    named = ztree.named_leaves(latent)
    unknown = sorted(set(patterns) - set(named))
    if unknown:
        raise ValueError(f"patterns name leaves that are not in the params: {unknown}")
    leaves = [("params", name, leaf) for name, leaf in named.items()]
    if batch_stats is not None:
        ztree.check_finite(batch_stats)
        leaves += [("batch_stats", name, leaf)
                   for name, leaf in ztree.named_leaves(batch_stats).items()]
    for collection, name, leaf in leaves:
        leaf = np.asarray(leaf)
        if collection == "params" and name in aux:
            indices = np.asarray(aux[name]["indices"]).astype(np.int64)
            mask = indices < leaf.shape[0]
            entry, own = _encode_shared(name, leaf, indices, mask,
                                        _index_bits_for(name, indices.shape, index_bits))
            entry.update(shape=list(indices.shape), dtype=str(leaf.dtype))
        elif collection == "params" and name in patterns:
            entry, own = _encode_pattern(name, leaf, patterns[name])
        else:
            entry, own = _encode_raw(leaf)
        entry.update(name=name, collection=collection)
        entry["sections"] = list(range(len(sections) + 1, len(sections) + 1 + len(own)))
        entries.append(entry)
        sections.extend(own)
    return entries, sections


def to_bytes(latent, aux=None, *, index_bits=None, metadata: dict | None = None,
             patterns=None, batch_stats=None) -> bytes:
    """The complete file contents for ``save``."""
    entries, payloads = encode_leaves(latent, aux, index_bits=index_bits, patterns=patterns,
                                      batch_stats=batch_stats)
    header = {"format": FORMAT_VERSION, "leaves": entries, "metadata": metadata or {}}
    meta = zlib.compress(json.dumps(header, sort_keys=True, separators=(",", ":")).encode(), 9)
    parts = [MAGIC, struct.pack("<HI", FORMAT_VERSION, len(payloads) + 1)]
    for payload in [meta, *payloads]:
        parts += [struct.pack("<Q", len(payload)), payload,
                  struct.pack("<I", zlib.crc32(payload))]
    body = b"".join(parts)
    return body + struct.pack("<I", zlib.crc32(body))


def save(path: str | os.PathLike, latent, aux=None, *, index_bits=None,
         metadata: dict | None = None, patterns=None, batch_stats=None) -> int:
    """Writes the compressed model atomically; returns the file size in bytes.

    Arguments as ``encode_leaves``; ``metadata`` is any JSON-serialisable dict
    (net name, accuracy, ...).
    """
    blob = to_bytes(latent, aux, index_bits=index_bits, metadata=metadata, patterns=patterns,
                    batch_stats=batch_stats)
    write_atomic(path, blob)
    return len(blob)


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Writes ``data`` to ``path`` through a temp file in the same folder and a rename.

    A reader sees the old file or the whole new one, never a part; on failure
    the temp file is removed. The temp file is created as ``open`` would
    create it (mode 0666, less the umask, applied by the kernel), not with
    ``mkstemp``'s owner-only 0600.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".zylax-{secrets.token_hex(8)}.tmp")
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


def _decode_leaf(entry: dict, sections: list[bytes]) -> np.ndarray:
    shape = tuple(entry["shape"])
    size = int(np.prod(shape))
    own = [sections[i] for i in entry["sections"]]
    if entry["method"] == "raw":
        dtype = np.dtype(entry["dtype"]).newbyteorder("<")
        if len(own[0]) != size * dtype.itemsize:
            raise CorruptFileError(f"{entry['name']}: raw section has {len(own[0])} bytes")
        return np.frombuffer(own[0], dtype).astype(entry["dtype"]).reshape(shape)
    if entry["method"] == "pattern":
        scale = np.frombuffer(own[0], "<f4").astype(entry["dtype"])
        if scale.shape != shape[-1:] or len(own[1]) != -(-size // 8):
            raise CorruptFileError(f"{entry['name']}: pattern sections do not fit the layer")
        return (packing.unpack_binary(np.frombuffer(own[1], np.uint8), shape)
                * scale).astype(entry["dtype"])
    k = 1 << entry["bits"]
    codebook = np.frombuffer(own[0], "<f4").astype(entry["dtype"])
    if codebook.shape[0] != k:
        raise CorruptFileError(f"{entry['name']}: codebook has {codebook.shape[0]} entries, "
                               f"expected {k}")
    if entry["method"] == "shared":
        indices = huffman.decode(own[1])
        if indices.size != size or (indices.size and indices.max() >= k):
            raise CorruptFileError(f"{entry['name']}: index stream does not fit the layer")
        return codebook[indices].reshape(shape)
    if entry["method"] == "sparse_shared":
        positions, symbols = sparse.from_relative(huffman.decode(own[2]), huffman.decode(own[1]),
                                                  size, k)
        if positions.size != entry["kept"] or (symbols.size and symbols.max() >= k):
            raise CorruptFileError(f"{entry['name']}: sparse streams do not fit the layer")
        out = np.zeros(size, codebook.dtype)
        out[positions] = codebook[symbols]
        return out.reshape(shape)
    raise CorruptFileError(f"{entry['name']}: unknown method {entry['method']!r}")


def _nest(flat: dict[str, Any]) -> dict:
    tree: dict = {}
    for name, value in flat.items():
        node = tree
        *parents, leaf = name.split("/")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def read_header(blob: bytes) -> tuple[dict, list[bytes]]:
    """Verifies all checksums and returns ``(header, sections)``."""
    sections = _split_sections(blob)
    try:
        header = json.loads(zlib.decompress(sections[0]).decode())
        leaves = header["leaves"]
        for entry in leaves:
            if any(not 0 < i < len(sections) for i in entry["sections"]):
                raise CorruptFileError(f"{entry['name']}: section index out of range")
    except (zlib.error, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise CorruptFileError(f"unreadable metadata: {err}") from err
    return header, sections


def load_variables(path: str | os.PathLike) -> tuple[dict, dict]:
    """Reads a ``.zyl`` file; returns ``(variables, header)``.

    ``variables`` is ``{"params": ..., "batch_stats": ...}`` (the second only
    when the file holds BatchNorm statistics), nested dicts of NumPy arrays
    ready for ``model.apply``; ``header["metadata"]`` is the dict given to
    ``save`` and ``header["leaves"]`` the per-leaf entries. Raises
    ``CorruptFileError``.
    """
    with open(path, "rb") as f:
        blob = f.read()
    header, sections = read_header(blob)
    flat: dict[str, dict] = {}
    for entry in header["leaves"]:
        collection = entry.get("collection", "params")
        if collection not in COLLECTIONS:
            raise CorruptFileError(f"{entry.get('name', '?')}: unknown collection {collection!r}")
        try:
            flat.setdefault(collection, {})[entry["name"]] = _decode_leaf(entry, sections)
        except CorruptFileError:
            raise
        except (ValueError, KeyError, TypeError, IndexError) as err:
            raise CorruptFileError(f"{entry.get('name', '?')}: {err}") from err
    variables = {c: _nest(flat[c]) for c in COLLECTIONS if c in flat}
    variables.setdefault("params", {})
    return variables, header


def load(path: str | os.PathLike) -> tuple[dict, dict]:
    """Reads a ``.zyl`` file; returns ``(params, header)`` (see ``load_variables``)."""
    variables, header = load_variables(path)
    return variables["params"], header
