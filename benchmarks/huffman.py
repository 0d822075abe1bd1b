"""zylax canonical Huffman vs dahuffman (pure Python) and zlib level 9.

Run: python -m benchmarks.huffman [--archive runs/lenet300.zyl] [--sizes 1000000 10000000]
Streams: the real weight-index and gap streams of a LeNet-300-100 ``.zyl`` file
(decoded from its sections), and synthetic geometric (skewed) streams. Sizes
are compared with the optimal Huffman payload and the Shannon entropy bound.
"""

from __future__ import annotations

import argparse
import os
import zlib

import numpy as np

from benchmarks.common import measure, print_table
from zylax import archive
from zylax.coding import huffman


def entropy_bits(symbols: np.ndarray) -> float:
    """Shannon bound: n * H(p) bits for the empirical distribution."""
    counts = np.bincount(symbols)
    p = counts[counts > 0] / symbols.size
    return float(-np.sum(counts[counts > 0] * np.log2(p)))


def archive_streams(path: str) -> dict[str, np.ndarray]:
    """The Huffman-coded weight-index and gap streams of the sparse shared layers of a file."""
    with open(path, "rb") as f:
        header, sections = archive.read_header_bytes(f.read())
    weights, gaps = [], []
    for entry in header["leaves"]:
        if entry["method"] == "shared" and entry["form"] == "sparse":
            weights.append(huffman.decode(sections[entry["sections"][1]]))
            gaps.append(huffman.decode(sections[entry["sections"][2]]))
    return {"lenet300 weight indices": np.concatenate(weights),
            "lenet300 gaps": np.concatenate(gaps)}


def synthetic(n: int, seed: int = 0) -> np.ndarray:
    """A skewed stream: geometric(0.2) - 1, clipped to 255 (like sparse gaps)."""
    return np.minimum(np.random.default_rng(seed).geometric(0.2, n) - 1, 255)


def run(archive_path: str | None = "runs/lenet300.zyl", sizes=(1_000_000, 10_000_000),
        dahuffman_limit: int = 10_000_000, repeats: int = 5) -> list[dict]:
    from dahuffman import HuffmanCodec

    streams = {}
    if archive_path and os.path.exists(archive_path):
        streams.update(archive_streams(archive_path))
    for n in sizes:
        streams[f"geometric {n:,}"] = synthetic(n)
    rows = []
    for label, symbols in streams.items():
        symbols = symbols.astype(np.int64)
        blob = huffman.encode(symbols)
        assert np.array_equal(huffman.decode(blob), symbols)
        enc = measure(lambda: huffman.encode(symbols), repeats=repeats)
        dec = measure(lambda: huffman.decode(blob), repeats=repeats)
        raw = symbols.astype(np.uint8 if symbols.max() < 256 else np.uint16).tobytes()
        zlib_blob = zlib.compress(raw, 9)
        zlib_enc = measure(lambda: zlib.compress(raw, 9), repeats=max(1, repeats // 2), warmup=0)
        row = {"stream": label, "n": symbols.size, "ours_bytes": len(blob),
               "optimal_bytes": huffman.payload_bits(symbols) / 8,
               "entropy_bytes": entropy_bits(symbols) / 8, "zlib_bytes": len(zlib_blob),
               "encode": enc, "decode": dec, "zlib_encode": zlib_enc}
        if symbols.size <= dahuffman_limit:
            data = symbols.tolist()
            codec = HuffmanCodec.from_data(data)
            da_blob = codec.encode(data)
            row["dahuffman_bytes"] = len(da_blob)
            row["dahuffman_encode"] = measure(lambda: codec.encode(data), repeats=1, warmup=0)
            row["dahuffman_decode"] = measure(lambda: codec.decode(da_blob), repeats=1, warmup=0)
        rows.append(row)
    table = []
    for r in rows:
        da_enc = r.get("dahuffman_encode")
        da_dec = r.get("dahuffman_decode")
        table.append([
            r["stream"], f"{r['n']:,}", f"{r['n'] / r['encode'].median / 1e6:.1f}",
            f"{r['n'] / r['decode'].median / 1e6:.1f}",
            f"{da_enc.median / r['encode'].median:.0f}x" if da_enc else "-",
            f"{da_dec.median / r['decode'].median:.0f}x" if da_dec else "-",
            f"{r['zlib_encode'].median / r['encode'].median:.1f}x",
            f"{r['ours_bytes']:,}", f"{r['optimal_bytes']:,.0f}", f"{r['entropy_bytes']:,.0f}",
            f"{r['ours_bytes'] - np.ceil(r['optimal_bytes']):,.0f}",
            f"{r.get('dahuffman_bytes', 0):,}", f"{r['zlib_bytes']:,}"])
    print_table("Huffman: zylax vs dahuffman and zlib -9 (speed-ups are time ratios)",
                ["stream", "symbols", "enc Msym/s", "dec Msym/s", "vs dahuffman enc",
                 "vs dahuffman dec", "vs zlib enc", "zylax B", "optimal Huffman B",
                 "entropy B", "table B", "dahuffman B", "zlib B"], table)
    return rows


def profile_encode(n: int = 1_000_000, repeats: int = 21) -> dict:
    """Splits ``huffman.encode`` of a geometric stream into its passes."""
    symbols = synthetic(n)
    counts, _ = huffman._histogram(symbols, huffman.MAX_ALPHABET)
    lengths = huffman.code_lengths(counts)
    codes, _ = huffman.canonical_codes(lengths)
    total = int(np.dot(counts, lengths))
    parts = {
        "histogram (compiled pass 1)": lambda: huffman._histogram(symbols, huffman.MAX_ALPHABET),
        "code lengths + canonical codes (Python, alphabet-sized)": lambda: huffman.canonical_codes(
            huffman.code_lengths(counts)),
        "bit packing (compiled pass 2)": lambda: huffman._pack_bits_short(symbols, codes,
                                                                          lengths, total),
        "whole encode": lambda: huffman.encode(symbols)}
    timings = {name: measure(fn, repeats=repeats) for name, fn in parts.items()}
    print_table(f"Profile of huffman.encode, {n:,} geometric symbols", ["part", "time"],
                [[name, str(t)] for name, t in timings.items()])
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--archive", default="runs/lenet300.zyl")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="only the encode profile")
    args = parser.parse_args()
    if args.profile:
        profile_encode()
    else:
        run(args.archive, args.sizes, repeats=args.repeats)


if __name__ == "__main__":
    main()
