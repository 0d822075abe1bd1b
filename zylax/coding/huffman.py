"""Canonical Huffman coding of non-negative integer arrays (Deep Compression section 4).

``encode(symbols) -> bytes`` and ``decode(bytes) -> symbols`` are exact inverses.
The blob is self-describing:

    varint n_symbols | varint alphabet_size | u8 max_len |
    varint count[L] for L = 1..max_len |
    varint symbol deltas in canonical order (sorted by (length, symbol)) |
    payload bits, MSB first, zero-padded to a byte

The code-length table therefore costs about one byte per used symbol. A
stream with one distinct symbol gets a 1-bit code. The bit loops are compiled
with numba; no Python loop runs per symbol.
"""

from __future__ import annotations

import heapq

import numba
import numpy as np

MAX_ALPHABET = 1 << 24
"""Largest alphabet accepted (symbols must be < 2**24)."""


def code_lengths(counts: np.ndarray) -> np.ndarray:
    """Optimal (Huffman) code length of every symbol from its count; 0 for unused symbols.

    Builds the Huffman tree over the distinct symbols (a heap of at most the
    alphabet size, never the stream) with parent links; a node's depth is its
    parent's plus one, filled from the root down.
    """
    used = np.flatnonzero(counts)
    lengths = np.zeros(counts.shape[0], np.int64)
    if used.size == 1:
        lengths[used] = 1
        return lengths
    parent = [-1] * (2 * used.size - 1)
    heap = [(int(counts[s]), node) for node, s in enumerate(used)]
    heapq.heapify(heap)
    next_node = used.size
    while len(heap) > 1:
        c1, a = heapq.heappop(heap)
        c2, b = heapq.heappop(heap)
        parent[a] = parent[b] = next_node
        heapq.heappush(heap, (c1 + c2, next_node))
        next_node += 1
    depth = [0] * len(parent)
    for node in range(len(parent) - 2, -1, -1):  # parents are created after their children
        depth[node] = depth[parent[node]] + 1
    lengths[used] = depth[:used.size]
    return lengths


def canonical_codes(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Canonical codes for given lengths. Returns ``(codes uint64, order)``.

    ``order`` lists the used symbols sorted by (length, symbol); codes are
    assigned in that order, consecutive within a length, left-shifted between.
    """
    used = np.flatnonzero(lengths)
    order = used[np.lexsort((used, lengths[used]))]
    codes = np.zeros(lengths.shape[0], np.uint64)
    code, previous = 0, 0
    for s in order:  # over the alphabet, not the stream
        code <<= int(lengths[s]) - previous
        codes[s] = code
        previous = int(lengths[s])
        code += 1
    return codes, order


def put_varint(out: bytearray, value: int) -> None:
    """Appends the non-negative ``value`` to ``out`` as a LEB128 varint (7 bits a byte)."""
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return


def get_varint(blob: bytes, pos: int) -> tuple[int, int]:
    """``(value, position after)`` of the varint at ``blob[pos]``; ``ValueError`` when it is
    truncated or longer than 64 bits."""
    value, shift = 0, 0
    while True:
        if pos >= len(blob):
            raise ValueError("Huffman blob truncated inside its header")
        byte = blob[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("Huffman blob has a malformed varint")


@numba.njit(cache=True)
def _read_varints(buffer, pos, count):  # pragma: no cover - compiled
    """``count`` varints from ``buffer[pos:]``: ``(values int64, position after)``; position
    -1 when the buffer ends inside them or a varint runs past 63 bits (the values must
    then fit int64 once summed: each is below 2**48, the alphabet's bound, or refused)."""
    values = np.zeros(count, np.int64)
    for i in range(count):
        value, shift = 0, 0
        while True:
            if pos >= buffer.size or shift > 42:
                return values, -1
            byte = buffer[pos]
            pos += 1
            value |= np.int64(byte & 0x7F) << shift
            if byte < 0x80:
                break
            shift += 7
        values[i] = value
    return values, pos


@numba.njit(cache=True)
def _histogram(symbols, limit):  # pragma: no cover - compiled
    """Counts of each symbol; returns (counts, bad) where bad is the first value outside [0, limit)."""
    top = 0
    for s in symbols:
        if s < 0 or s >= limit:
            return np.zeros(0, np.int64), s
        if s > top:
            top = s
    counts = np.zeros(top + 1, np.int64)
    for s in symbols:
        counts[s] += 1
    return counts, 0


@numba.njit(cache=True)
def _pack_bits_short(symbols, codes, lengths, total_bits):  # pragma: no cover - compiled
    """``_pack_bits`` for codes of at most 32 bits: flushes 32 bits at a time."""
    out = np.zeros((total_bits + 7) // 8 + 4, np.uint8)
    acc = np.uint64(0)
    filled = 0
    pos = 0
    for s in symbols:
        length = lengths[s]
        acc = (acc << np.uint64(length)) | codes[s]
        filled += length
        if filled >= 32:
            filled -= 32
            word = acc >> np.uint64(filled)
            out[pos] = np.uint8((word >> np.uint64(24)) & np.uint64(0xFF))
            out[pos + 1] = np.uint8((word >> np.uint64(16)) & np.uint64(0xFF))
            out[pos + 2] = np.uint8((word >> np.uint64(8)) & np.uint64(0xFF))
            out[pos + 3] = np.uint8(word & np.uint64(0xFF))
            pos += 4
            acc &= (np.uint64(1) << np.uint64(filled)) - np.uint64(1)
    while filled > 0:
        if filled >= 8:
            filled -= 8
            out[pos] = np.uint8((acc >> np.uint64(filled)) & np.uint64(0xFF))
        else:
            out[pos] = np.uint8((acc << np.uint64(8 - filled)) & np.uint64(0xFF))
            filled = 0
        pos += 1
    return out[:(total_bits + 7) // 8]


@numba.njit(cache=True)
def _pack_bits(symbols, codes, lengths, total_bits):  # pragma: no cover - compiled
    out = np.zeros((total_bits + 7) // 8, np.uint8)
    acc = np.uint64(0)
    filled = 0
    pos = 0
    for s in symbols:
        length = lengths[s]
        acc = (acc << np.uint64(length)) | codes[s]
        filled += length
        while filled >= 8:
            filled -= 8
            out[pos] = np.uint8((acc >> np.uint64(filled)) & np.uint64(0xFF))
            pos += 1
        acc &= (np.uint64(1) << np.uint64(filled)) - np.uint64(1)
    if filled > 0:
        out[pos] = np.uint8((acc << np.uint64(8 - filled)) & np.uint64(0xFF))
    return out


TABLE_BITS = 11
"""Codes up to this length decode with one table lookup; longer ones fall back bit by bit."""


def _decode_table(first_code, first_index, count, order, max_len):
    """``(symbol, length)`` for every ``L``-bit prefix whose code is at most L bits long."""
    bits = min(max_len, TABLE_BITS)
    table_symbol = np.zeros(1 << bits, np.int64)
    table_length = np.zeros(1 << bits, np.int64)
    for length in range(1, bits + 1):  # at most TABLE_BITS lengths, vectorised within
        n = int(count[length])
        if n == 0:
            continue
        codes = first_code[length] + np.arange(n)
        span = 1 << (bits - length)
        starts = codes << (bits - length)
        slots = (starts[:, None] + np.arange(span)[None, :]).ravel()
        table_symbol[slots] = np.repeat(order[first_index[length]:first_index[length] + n], span)
        table_length[slots] = length
    return table_symbol, table_length, bits


@numba.njit(cache=True)
def _peek(payload, pos, bits):  # pragma: no cover - compiled
    byte = pos >> 3
    word = 0
    for k in range(3):
        word <<= 8
        if byte + k < payload.shape[0]:
            word |= payload[byte + k]
    return (word >> (24 - (pos & 7) - bits)) & ((1 << bits) - 1)


@numba.njit(cache=True)
def _unpack_bits(payload, n, first_code, first_index, count, order, max_len,
                 table_symbol, table_length, bits):  # pragma: no cover - compiled
    """Decodes ``n`` symbols; returns ``(symbols, end_bit)``, end_bit < 0 on bad data."""
    out = np.empty(n, np.int64)
    pos = 0
    total = payload.shape[0] * 8
    for i in range(n):
        prefix = _peek(payload, pos, bits)
        length = table_length[prefix]
        if length > 0:
            out[i] = table_symbol[prefix]
            pos += length
        else:  # a code longer than the table: continue bit by bit
            code = prefix
            length = bits
            p = pos + bits
            while True:
                if p >= total:
                    return out, -1
                code = (code << 1) | ((payload[p >> 3] >> (7 - (p & 7))) & 1)
                p += 1
                length += 1
                if length > max_len:
                    return out, -2
                offset = code - first_code[length]
                if 0 <= offset < count[length]:
                    out[i] = order[first_index[length] + offset]
                    break
            pos = p
        if pos > total:
            return out, -1
    return out, pos


def encode(symbols) -> bytes:
    """Canonical-Huffman-encodes a 1-D array of non-negative integers (< 2**24)."""
    symbols = np.asarray(symbols)
    if symbols.ndim != 1:
        raise ValueError(f"encode expects a 1-D array, got shape {symbols.shape}")
    if not np.issubdtype(symbols.dtype, np.integer):
        raise ValueError(f"encode expects integers in [0, {MAX_ALPHABET}), got dtype "
                         f"{symbols.dtype}")
    header = bytearray()
    put_varint(header, symbols.size)
    if symbols.size == 0:
        return bytes(header)
    counts, bad = _histogram(symbols, MAX_ALPHABET)
    if counts.size == 0:
        raise ValueError(f"encode expects integers in [0, {MAX_ALPHABET}), got {bad}")
    lengths = code_lengths(counts)
    codes, order = canonical_codes(lengths)
    max_len = int(lengths.max())
    if max_len > 57:
        raise ValueError(f"code length {max_len} exceeds the 57-bit coder limit")
    put_varint(header, counts.shape[0])
    header.append(max_len)
    per_length = np.bincount(lengths[order], minlength=max_len + 1)
    for length in range(1, max_len + 1):
        put_varint(header, int(per_length[length]))
    previous = -1
    for length_start in range(order.size):  # alphabet-sized, not stream-sized
        s = int(order[length_start])
        if length_start == 0 or lengths[s] != lengths[order[length_start - 1]]:
            previous = -1
        put_varint(header, s - previous - 1)
        previous = s
    total_bits = int(np.dot(counts, lengths))
    pack = _pack_bits_short if max_len <= 32 else _pack_bits
    payload = pack(symbols, codes, lengths.astype(np.int64), total_bits)
    return bytes(header) + payload.tobytes()


def decode(blob: bytes, max_symbols: int | None = None) -> np.ndarray:
    """Inverse of ``encode``; returns int64 symbols. Raises ``ValueError`` on a bad blob.

    Every symbol costs at least one payload bit, so a blob claiming more than
    ``8 * len(blob)`` symbols is refused before anything is allocated, as is
    one claiming more than ``max_symbols``.
    """
    blob = bytes(blob)
    n, pos = get_varint(blob, 0)
    if n > 8 * len(blob) or (max_symbols is not None and n > max_symbols):
        raise ValueError(f"Huffman blob claims {n} symbols, more than it can hold"
                         + ("" if max_symbols is None else f" or the {max_symbols} expected"))
    if n == 0:
        if pos != len(blob):
            raise ValueError("Huffman blob has trailing bytes")
        return np.zeros(0, np.int64)
    alphabet, pos = get_varint(blob, pos)
    if not 0 < alphabet <= MAX_ALPHABET or pos >= len(blob):
        raise ValueError(f"Huffman blob has a bad alphabet size {alphabet}")
    max_len = blob[pos]
    pos += 1
    if not 1 <= max_len <= 57:
        raise ValueError(f"Huffman blob has a bad maximum code length {max_len}")
    count = np.zeros(max_len + 2, np.int64)
    for length in range(1, max_len + 1):
        count[length], pos = get_varint(blob, pos)
    used = int(count.sum())
    if not 0 < used <= min(alphabet, n):  # each listed symbol occurs in the stream
        raise ValueError(f"Huffman blob lists {used} symbols for an alphabet of {alphabet} "
                         f"and a stream of {n}")
    deltas, pos = _read_varints(np.frombuffer(blob, np.uint8), pos, used)
    if pos < 0:
        raise ValueError("Huffman blob truncated or malformed inside its symbol table")
    first_code = np.zeros(max_len + 2, np.int64)
    first_index = np.zeros(max_len + 2, np.int64)
    order = np.zeros(used, np.int64)
    index, code = 0, 0
    for length in range(1, max_len + 1):  # symbols ascend within a length: deltas + 1, summed
        first_code[length], first_index[length] = code, index
        within = deltas[index:index + int(count[length])] + 1
        order[index:index + within.size] = np.cumsum(within) - 1
        if within.size and order[index + within.size - 1] >= alphabet:
            raise ValueError("Huffman blob lists a symbol outside its alphabet")
        index += within.size
        code = (code + int(count[length])) << 1
    if code > (1 << (max_len + 1)) or (used > 1 and code != (1 << (max_len + 1))):
        raise ValueError("Huffman blob has an invalid code-length table")
    payload = np.frombuffer(blob, np.uint8, offset=pos)
    table = _decode_table(first_code, first_index, count, order, max_len)
    symbols, end_bit = _unpack_bits(payload, n, first_code, first_index, count, order, max_len,
                                    *table)
    if end_bit < 0:
        raise ValueError("Huffman payload is truncated or corrupt")
    if (end_bit + 7) // 8 != payload.size:
        raise ValueError("Huffman payload has trailing bytes")
    return symbols


def payload_bits(symbols) -> int:
    """Bits of the optimal Huffman payload (no table) for ``symbols``."""
    symbols = np.asarray(symbols, np.int64)
    if symbols.size == 0:
        return 0
    counts = np.bincount(symbols)
    return int(np.sum(code_lengths(counts)[np.flatnonzero(counts)] * counts[counts > 0]))
